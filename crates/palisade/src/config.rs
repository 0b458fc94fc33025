//! The recommended stack from a configuration file: [`PresetConfig`], read from TOML with
//! environment overrides, checked before anything is built.
//!
//! ```toml
//! # palisade.toml
//! name = "llm"                 # the dependency: names the breaker, metrics and spans
//! deadline = "30s"             # the whole call, retries and waits included
//!
//! [attempt_timeout]
//! limit = "10s"                # each attempt
//! escalate = { factor = 2.0, cap = "30s" }   # after timed-out attempts; "off" for a fixed limit
//!
//! [retry]
//! max_attempts = 3
//! wait_for_breaker = true      # a call the open breaker refuses waits for its next probe
//! wait_for_budget = true       # a retry the budget refuses waits for it, until the deadline
//! min_attempt_time = "10ms"    # no retry starts with less than this left before the deadline
//! backoff = { exponential = { initial = "1s", factor = 2.0 } }  # or constant/linear
//! cap = "1m"                   # the longest backoff delay
//! jitter = { proportional = 0.1 }                              # or "none", "full", "equal", "decorrelated"
//!
//! [retry.budget]               # retries up to 12 % of requests + 1/s (at least 8/s) over 10 s, behind a throttle
//! ratio = 0.12
//! min_per_second = 1
//! floor_per_second = 8
//! ttl = "10s"
//! max_tokens = 10              # the retry throttle: stops retries while half or less is left
//! token_ratio = 1.0
//!
//! [breaker]                    # palisade_breaker::BreakerConfig's fields, durations as text
//! failure_rate = { ratio = 0.5, min_calls = 20 }
//! open_duration = "5s"
//! max_open_duration = "1m"
//!
//! [route]                      # palisade_route::RouteConfig's fields (optional)
//! panic_ratio = 0.5
//! outlier = { consecutive_failures = 5, base_ejection = "30s" }
//! health = { ramp = { steps = { steps = 5, interval = "30s" } } }
//!
//! [[endpoints]]                # the router's endpoints, keyed by their position here
//! address = "http://10.0.0.1:8080"
//! [[endpoints]]
//! address = "http://10.0.1.1:8080"
//! tier = 1                     # failover: takes traffic only as far as tier 0 cannot
//!
//! [features.summarise]         # switchboard features, by name (FeatureConfig's fields)
//! failures_to_turn_off = 3
//! window = "1m"
//! cooldown = "30s"
//! probe_timeout = "1m"         # a probe still out after this long has failed
//! ```
//!
//! The preset is built with [`PresetConfig::builder`]; the router with
//! [`PresetConfig::route`], which asks for a function turning each endpoint's address into
//! its service; the switchboard with [`PresetConfig::switchboard`].
//!
//! Every key is optional except `name`; what a file leaves out keeps the preset's default
//! (see [`preset::recommended`]), inside a table too (`failure_rate = { ratio = 0.5 }` keeps
//! the default `min_calls`). A rule that is off by default has no defaults to keep: turning
//! it on names all its keys (`slow_call_rate = { ratio = 0.5, min_calls = 20 }`), and one
//! left out is an error naming it. A cap left out yields to a longer delay the file sets: with
//! `limit = "40s"` alone the escalation's cap is 40 s, not the default 30 s, with a
//! backoff from 2 minutes `retry.cap` is 2 minutes (the retry layer's own rule), and with
//! `open_duration = "5s"` alone the breaker's `max_open_duration` is 5 s, not the default
//! 750 ms; the router's `max_cooldown` and `outlier.max_ejection` likewise yield to a longer
//! `cooldown` and `outlier.base_ejection`.
//!
//! A key that names a kind (`retry.backoff`, `retry.jitter`, `breaker.window`,
//! `breaker.cancel`, `route.health.ramp`) takes a kind without settings as a word
//! (`jitter = "full"`, `cancel = "ignore"`) and one with settings as a table holding them
//! (`{ proportional = 0.1 }`). The default's kind with an empty table keeps the default's
//! settings (`backoff = { exponential = {} }`), as any table does; any other kind with an empty
//! table or array is refused with the shapes the key takes: `{ constant = {} }` has no delay,
//! `{ count = {} }` no count, and `{ full = {} }` (which the toml crate would read as
//! `"full"`) is not how a word is written.
//!
//! Durations are written as people write them (`"250ms"`, `"30s"`, `"1m 30s"`); a bare
//! number is milliseconds
//! ([`palisade_core::serde_duration`]), so `deadline = 30` and `PALISADE_DEADLINE=30` mean
//! 30 ms: write the unit. A rule that is on by default is turned off
//! with the word `"off"` (`failure_rate = "off"`, `escalate = "off"`,
//! `outlier = { consecutive_failures = "off" }`): leaving the key out keeps the default, and
//! TOML has no null ([`palisade_core::serde_off`]). A seed (`retry.seed`, `breaker.seed`,
//! `route.seed`) is any `u64`, but TOML's integers stop at 9223372036854775807: a seed above
//! that is written as a string of digits, `seed = "18446744073709551615"`
//! ([`palisade_core::serde_seed`]); written as a number it is not TOML, and the error names
//! the key.
//!
//! **Live reconfiguration.** [`PresetConfig::build_with_handle`] returns the stack and a
//! [`PresetHandle`] whose [`reconfigure`](PresetHandle::reconfigure) applies a new file to the
//! running stack: the breaker, the retry budget and the router change in place, keeping their
//! state (an open breaker stays open, the budget keeps its counts, endpoints keep their
//! health); what a running stack cannot take (timeouts, attempts, backoff, endpoints) is listed
//! for a rebuild, never silently ignored.
//!
//! **Environment overrides.** [`PresetConfig::from_toml_with_env`] lets variables named
//! `PALISADE_<KEY>` override the file, with `__` between the levels of a nested key:
//! `PALISADE_DEADLINE=45s`, `PALISADE_RETRY__MAX_ATTEMPTS=5`,
//! `PALISADE_BREAKER__OPEN_DURATION=10s`. A value is read as a TOML value when it parses as
//! exactly one (`5`, `0.5`, `true`, `{ ratio = 0.5, min_calls = 20 }`), else as a string: a
//! value with more after its first (`5` and a line `bogus = 1`) is a string, so the key's type
//! refuses it rather than its first value being taken and the rest dropped. Every
//! variable with that prefix, in any case (`palisade_retry__max_attempts` too, as the key after
//! it is read in any case), is read as a key, and an unknown one is an error naming it, so a
//! typo never passes unnoticed: keep other settings of your own out of the `PALISADE_` prefix
//! (this project's test database is `TEST_PALISADE_PG_URL` for that reason). Two variables
//! naming the same key (`PALISADE_DEADLINE` and `palisade_deadline`, a feature by two
//! spellings, an endpoint as `1` and `01`) must agree: with different values, which one won
//! would depend on nothing you wrote, so it is an error naming both; with the same value (as
//! text, or as TOML reads it: `5` and ` 5 `) it is read.
//!
//! An override changes what the file (or the defaults) define; it adds nothing to a table
//! whose entries the file names, the features (by name) and the endpoints (by position):
//! `PALISADE_FEATURES__SUMMARISE__COOLDOWN=45s` changes `[features.summarise]`, and when the
//! file defines no such feature it is an error naming the key path, the variable and the name,
//! with the nearest defined name when one is a few edits away. A misspelled
//! `PALISADE_FEATURES__SUMARISE__…` would otherwise add a feature of its own with default
//! settings, leaving `summarise` as it was, and nothing would tell. Likewise
//! `PALISADE_ENDPOINTS__1__TIER=2` changes the file's second endpoint (the first is `0`), and
//! naming one past the last is an error. A feature is named as the file writes it (in any
//! case: `Web-Search` or `web-search` for `[features.Web-Search]`), or in
//! lower case with `_` for every character a variable name cannot hold
//! (`PALISADE_FEATURES__WEB_SEARCH__…` for `[features.web-search]`). A variable naming a
//! whole table (`PALISADE_FEATURES='{ summarise = { cooldown = "45s" } }'`,
//! `PALISADE_ENDPOINTS='[{ address = "a" }]'`) replaces it, and is read and checked like the
//! file, before the variables that set keys inside it: variables apply shallowest first
//! (`PALISADE_RETRY` before `PALISADE_RETRY__MAX_ATTEMPTS`), then by name, so the result
//! never depends on the order of the environment. Sections with fixed keys (`[retry]`,
//! `[route]`, …) may be added by an override:
//! their keys are checked as the file's are.
//!
//! **Errors.** An unknown key, a value of the wrong type and a value that breaks a rule are all
//! a [`ConfigError`] whose field is the key's path (`breaker.failure_rate.ratio`,
//! `retry.max_attempts`) and whose rule says what was wrong, in TOML's words: a key that
//! takes one of a few shapes (`retry.backoff`, `retry.jitter`, `breaker.window`, a rule that
//! is a table or `"off"`) given another lists those it takes (`retry.jitter`: invalid value:
//! string "proportional", expected `"none"`, …, or `{ proportional = 0.1 }`). An error about
//! what a variable set names the variable; so does one a variable caused on another key,
//! through a rule between the two (`PALISADE_DEADLINE=5ms` leaves the default
//! `retry.min_attempt_time`, 10 ms, too long: the error names `retry.min_attempt_time`, the
//! variable and `deadline`):
//!
//! ```
//! use palisade::config::PresetConfig;
//!
//! let err = PresetConfig::from_toml("name = \"llm\"\n[retry]\nmax_attemps = 3").unwrap_err();
//! assert_eq!(err.field(), "retry.max_attemps");
//! assert!(err.rule().contains("unknown field"));
//!
//! let err = PresetConfig::from_toml("name = \"llm\"\n[breaker]\nfailure_rate = { ratio = 1.5, min_calls = 20 }")
//!     .unwrap_err();
//! assert_eq!(err.field(), "breaker.failure_rate.ratio");
//!
//! let config = PresetConfig::from_toml_with_env(
//!     "name = \"llm\"\ndeadline = \"20s\"",
//!     [("PALISADE_DEADLINE", "45s"), ("PALISADE_RETRY__MAX_ATTEMPTS", "5"), ("HOME", "/root")],
//! )?;
//! assert_eq!(config.deadline, std::time::Duration::from_secs(45));
//! assert_eq!(config.retry.max_attempts, 5);
//! let preset = config.builder()?.build()?;
//! # let _ = preset;
//!
//! // A bare number is milliseconds.
//! let config = PresetConfig::from_toml_with_env("name = \"llm\"", [("PALISADE_DEADLINE", "45")])?;
//! assert_eq!(config.deadline, std::time::Duration::from_millis(45));
//!
//! // An override changes a feature the file defines; it never adds one.
//! let file = "name = \"llm\"\n[features.summarise]\ncooldown = \"30s\"";
//! let err = PresetConfig::from_toml_with_env(file, [("PALISADE_FEATURES__SUMARISE__COOLDOWN", "45s")])
//!     .unwrap_err();
//! assert_eq!(err.field(), "features.sumarise");
//! assert!(err.rule().contains("`PALISADE_FEATURES__SUMARISE__COOLDOWN` names feature `sumarise`"));
//! assert!(err.rule().contains("did you mean `summarise`?"));
//!
//! // An override that breaks a rule on another key is named, with the key it set.
//! let err = PresetConfig::from_toml_with_env("name = \"llm\"", [("PALISADE_DEADLINE", "5ms")])
//!     .unwrap_err();
//! assert_eq!(err.field(), "retry.min_attempt_time");
//! assert!(err.rule().starts_with("(from `PALISADE_DEADLINE`, which set `deadline`) must be less"));
//! # Ok::<(), palisade::classify::ConfigError>(())
//! ```

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use palisade_breaker::BreakerConfig;
use palisade_core::ConfigError;
use palisade_fallback::{FeatureConfig, Switchboard};
use palisade_retry::budget::{RatioBudget, Throttled, TokenBucket};
use palisade_retry::{Backoff, Jitter, RetryLayer};
use palisade_route::{Route, RouteConfig, Static};
use serde::{Deserialize, Serialize};

use crate::preset::{self, PresetBuilder};

mod live;
pub use live::{PresetHandle, PresetReconfigured};

/// The prefix of the environment variables [`PresetConfig::from_toml_with_env`] reads.
pub const ENV_PREFIX: &str = "PALISADE_";

/// The process's `PALISADE_…` variables (the prefix in any case), for
/// [`PresetConfig::from_toml_with_env`]. They are read with [`std::env::vars_os`]:
/// [`std::env::vars`] panics on any variable whose name or value is not UTF-8, however
/// unrelated. Such a variable is left out, unless it is a `PALISADE_…` one, which is an
/// error: an override that cannot be read is not skipped without a word.
///
/// ```
/// use palisade::config::{env_vars, PresetConfig};
///
/// match PresetConfig::from_toml_with_env("name = \"llm\"", env_vars()?) {
///     Ok(config) => {
///         let preset = config.builder()?.build()?;
///         # let _ = preset;
///     }
///     // A `PALISADE_…` variable that is wrong, named.
///     Err(e) => eprintln!("{e}"),
/// }
/// # Ok::<(), palisade::classify::ConfigError>(())
/// ```
///
/// # Errors
/// A [`ConfigError`] on `(environment)` naming a `PALISADE_…` variable whose name or value is
/// not UTF-8 (its name with `\u{FFFD}` for the bytes that are not).
pub fn env_vars() -> Result<Vec<(String, String)>, ConfigError> {
    prefixed_vars(std::env::vars_os())
}

/// The `PALISADE_…` variables among `vars`, as [`env_vars`] reads them.
fn prefixed_vars(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut ours = Vec::new();
    for (name, value) in vars {
        let text = name.to_string_lossy();
        if env_path(&text).is_none() {
            continue;
        }
        let what = match (name.to_str(), value.into_string()) {
            (Some(name), Ok(value)) => {
                ours.push((name.to_owned(), value));
                continue;
            }
            (None, _) => "name",
            (Some(_), Err(_)) => "value",
        };
        return Err(ConfigError::new(
            "(environment)",
            format!(
                "has a variable whose {what} is not UTF-8, `{text}`: a `{ENV_PREFIX}` variable \
                 is read as text"
            ),
        ));
    }
    Ok(ours)
}

/// The key path of `var` when it is a `PALISADE_…` variable: what follows the prefix, which
/// is read in any case, as the keys after it (`palisade_retry__max_attempts` is read, and
/// checked, not skipped without a word).
fn env_path(var: &str) -> Option<&str> {
    var.get(..ENV_PREFIX.len())
        .filter(|prefix| prefix.eq_ignore_ascii_case(ENV_PREFIX))
        .map(|_| &var[ENV_PREFIX.len()..])
}

/// The recommended stack's settings; see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PresetConfig {
    /// The dependency's name: it names the breaker, metrics and spans, so it must not be
    /// empty or only whitespace.
    pub name: String,
    /// The limit on the whole call (default 30 s).
    #[serde(default = "defaults::deadline", with = "palisade_core::serde_duration")]
    pub deadline: Duration,
    /// The per-attempt timeout.
    #[serde(default)]
    pub attempt_timeout: TimeoutConfig,
    /// The retry layer.
    #[serde(default)]
    pub retry: RetryConfig,
    /// The breaker.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// The router's settings (`[route]`); a file with endpoints and no `[route]` uses the
    /// defaults. Without `[[endpoints]]`, the settings are for a router whose endpoints come
    /// from elsewhere (`Route::discover_builder(..).config(..)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteConfig>,
    /// The router's endpoints (`[[endpoints]]`), in key order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointConfig>,
    /// Switchboard features by name (`[features.NAME]`); a name must not be empty or only
    /// whitespace (`[features.""]` is refused).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub features: BTreeMap<String, FeatureConfig>,
}

/// One of the router's endpoints in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EndpointConfig {
    /// Where it is: an URL, a host and port, a name your connect function understands (not
    /// empty).
    pub address: String,
    /// Its priority tier (0, the default, takes traffic first; see
    /// [`RouteBuilder::tier`](palisade_route::RouteBuilder::tier)).
    #[serde(default)]
    pub tier: u8,
}

impl EndpointConfig {
    /// An endpoint at `address`, in tier 0.
    pub fn new(address: impl Into<String>) -> Self {
        EndpointConfig {
            address: address.into(),
            tier: 0,
        }
    }
}

/// The per-attempt timeout's settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TimeoutConfig {
    /// Each attempt's limit (default 10 s).
    #[serde(with = "palisade_core::serde_duration")]
    pub limit: Duration,
    /// How the limit grows after timed-out attempts (default ×2 up to 30 s; `None`, `"off"` in
    /// a file: fixed). A file that leaves `cap` out and sets a longer `limit` gets the limit as
    /// the cap, so that raising the limit alone is not refused for a cap it never wrote.
    #[serde(with = "palisade_core::serde_off")]
    pub escalate: Option<Escalation>,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        TimeoutConfig {
            limit: Duration::from_secs(10),
            escalate: Some(Escalation {
                factor: 2.0,
                cap: Duration::from_secs(30),
            }),
        }
    }
}

/// An escalating timeout: `limit × factor^n`, at most `cap`, after `n` timed-out attempts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Escalation {
    /// The growth per timed-out attempt (at least 1).
    pub factor: f64,
    /// The longest limit.
    #[serde(with = "palisade_core::serde_duration")]
    pub cap: Duration,
}

/// The retry layer's settings (its budget is the default `Throttled` one).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Attempts per call, the first included (default 3).
    pub max_attempts: u32,
    /// The backoff between attempts (default exponential from 1 s, ×2).
    pub backoff: BackoffConfig,
    /// The longest backoff delay (default 60 s, the retry layer's
    /// [`DEFAULT_CAP`](palisade_retry::DEFAULT_CAP)). As in the retry layer, a file that
    /// leaves it out and sets a longer initial delay gets that delay as the cap.
    #[serde(with = "palisade_core::serde_duration")]
    pub cap: Duration,
    /// The jitter (default ±10 %): in a file `"none"`, `"full"`, `"equal"`,
    /// `"decorrelated"` (words, not tables: `{ full = {} }` is refused), or
    /// `{ proportional = 0.1 }`.
    pub jitter: JitterConfig,
    /// The seed of the jitter's random numbers (default: from the operating system). Any
    /// `u64`: one above 9223372036854775807, TOML's largest integer, is written as a string
    /// of digits (`seed = "18446744073709551615"`; [`palisade_core::serde_seed`]).
    #[serde(with = "palisade_core::serde_seed::option")]
    pub seed: Option<u64>,
    /// Whether a call refused by the open breaker waits for its next probe, within the
    /// deadline and without using an attempt (default `true`; see
    /// [`RetryBuilder::wait_for_breaker`](crate::retry::RetryBuilder::wait_for_breaker)).
    pub wait_for_breaker: bool,
    /// Whether a retry the budget refuses waits for the budget, within the deadline (default
    /// `true`; see
    /// [`RetryBuilder::wait_for_budget`](crate::retry::RetryBuilder::wait_for_budget)).
    pub wait_for_budget: bool,
    /// The least time before the deadline a retry starts with (default 10 ms; see
    /// [`RetryBuilder::min_attempt_time`](crate::retry::RetryBuilder::min_attempt_time)).
    #[serde(with = "palisade_core::serde_duration")]
    pub min_attempt_time: Duration,
    /// The retry budget (`[retry.budget]`).
    pub budget: BudgetConfig,
}

/// The retry budget's settings: retries up to `ratio` of the requests plus `min_per_second`
/// (and never fewer than `floor_per_second`) over a window of `ttl` (a [`RatioBudget`]), behind gRPC-style retry throttling (a
/// [`TokenBucket`] of `max_tokens`, `token_ratio` back per success): a [`Throttled`] budget.
/// The defaults are [`Throttled::default`]'s. [`PresetHandle::reconfigure`] changes every
/// setting but `ttl` in place.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BudgetConfig {
    /// Retries earned per request (default 0.12).
    pub ratio: f64,
    /// Retries per second allowed whatever the request rate, on top of `ratio` (default 1).
    pub min_per_second: u32,
    /// Retries per second a window allows at least, however few requests it counted: lets a
    /// client that sends little retry, and adds nothing once `ratio` earns more (default 8).
    pub floor_per_second: u32,
    /// The window requests and retries are counted over (default 10 s).
    #[serde(with = "palisade_core::serde_duration")]
    pub ttl: Duration,
    /// The retry throttle's size (default 10).
    pub max_tokens: u32,
    /// The tokens a success puts back (default 1.0).
    pub token_ratio: f64,
}

impl Default for BudgetConfig {
    /// [`Throttled::default`]'s settings, read from its budget and throttle so that the two
    /// cannot drift apart.
    fn default() -> Self {
        let budget = Throttled::default_budget();
        let throttle = Throttled::default_throttle();
        BudgetConfig {
            ratio: budget.ratio(),
            min_per_second: budget.min_per_second(),
            floor_per_second: budget.floor_per_second(),
            ttl: budget.ttl(),
            max_tokens: throttle.max_tokens(),
            token_ratio: throttle.token_ratio(),
        }
    }
}

impl BudgetConfig {
    /// The budget these settings describe.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key path (`retry.budget.ratio`, ...).
    pub fn build(&self) -> Result<Throttled, ConfigError> {
        let prefix = |e: ConfigError| e.within("retry.budget");
        let budget = RatioBudget::builder()
            .ttl(self.ttl)
            .min_per_second(self.min_per_second)
            .floor_per_second(self.floor_per_second)
            .ratio(self.ratio)
            .build()
            .map_err(prefix)?;
        let throttle = TokenBucket::builder()
            .max_tokens(self.max_tokens)
            .token_ratio(self.token_ratio)
            .build()
            .map_err(prefix)?;
        Ok(Throttled::new(budget, throttle))
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            wait_for_breaker: true,
            wait_for_budget: true,
            min_attempt_time: palisade_retry::DEFAULT_MIN_ATTEMPT_TIME,
            backoff: BackoffConfig::Exponential {
                initial: Duration::from_secs(1),
                factor: 2.0,
            },
            // The retry layer's own default, which `preset::recommended` uses: a file that
            // leaves the cap out builds the preset's stack.
            cap: palisade_retry::DEFAULT_CAP,
            jitter: JitterConfig::Proportional(0.1),
            seed: None,
            budget: BudgetConfig::default(),
        }
    }
}

/// A backoff schedule.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum BackoffConfig {
    /// The same delay every time.
    Constant {
        /// The delay.
        #[serde(with = "palisade_core::serde_duration")]
        delay: Duration,
    },
    /// `initial`, then `step` more each time.
    Linear {
        /// The first delay.
        #[serde(with = "palisade_core::serde_duration")]
        initial: Duration,
        /// The growth per retry.
        #[serde(with = "palisade_core::serde_duration")]
        step: Duration,
    },
    /// `initial`, then `factor` times the previous one.
    Exponential {
        /// The first delay.
        #[serde(with = "palisade_core::serde_duration")]
        initial: Duration,
        /// The growth factor.
        factor: f64,
    },
}

/// A jitter.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JitterConfig {
    /// The backoff delay itself.
    None,
    /// Anywhere between zero and the delay.
    Full,
    /// Half the delay plus anywhere up to the other half.
    Equal,
    /// Between the initial delay and three times the previous delay.
    Decorrelated,
    /// The delay, give or take this fraction of it.
    Proportional(f64),
}

mod defaults {
    use std::time::Duration;

    pub(super) fn deadline() -> Duration {
        Duration::from_secs(30)
    }
}

impl PresetConfig {
    /// Reads a TOML document.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key path of an unknown key, a value of the wrong type, or
    /// a value that breaks its rule.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_toml_with_env(text, std::iter::empty::<(String, String)>())
    }

    /// Reads a TOML document, then applies the `PALISADE_…` variables among `vars` (pass
    /// [`env_vars`]`()?` for the process's; other variables are ignored).
    ///
    /// # Errors
    /// As [`from_toml`](Self::from_toml). An error about what an override set (an unknown key,
    /// a value of the wrong type or one that breaks its rule) names the key path and the
    /// variable; one naming a feature or an endpoint the file does not define names the key
    /// path, the variable and the name (see the [module docs](self)); a variable that names
    /// no key (`PALISADE_`, `PALISADE_RETRY__`) is an error naming it; two variables naming
    /// the same key (`PALISADE_DEADLINE` and `palisade_deadline`) with different values are
    /// an error naming the key path and both variables. An error on a key no variable set,
    /// about a rule between it and a key one did set, names that variable and its key too:
    /// with `PALISADE_DEADLINE=5ms`, "`retry.min_attempt_time` (from `PALISADE_DEADLINE`,
    /// which set `deadline`) must be less than `deadline` (5ms) …". Such a variable is one
    /// without which the error goes away.
    pub fn from_toml_with_env<K, V>(
        text: &str,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, ConfigError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let file: toml::Table = toml::from_str(text).map_err(|e| not_toml(text, &e))?;
        let mut set: Vec<Override> = Vec::new();
        for (key, value) in vars {
            let var = key.as_ref();
            let Some(path) = env_path(var) else {
                continue;
            };
            let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
            if keys.iter().any(String::is_empty) {
                return Err(names_no_key(var));
            }
            // Deeper than any key: refused before its tables are built, as dropping thousands
            // of nested tables overflows the stack.
            if keys.len() > MAX_LEVELS {
                return Err(too_deep(var, keys.len()));
            }
            set.push((keys, var.to_owned(), value.as_ref().to_owned()));
        }
        // Shallowest first, then by name: a variable that sets a whole table
        // (`PALISADE_RETRY`) applies before those that set keys inside it
        // (`PALISADE_RETRY__MAX_ATTEMPTS`), whatever the order of the environment, which
        // would otherwise decide whether the key's value survives.
        set.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then_with(|| a.1.cmp(&b.1)));
        let (doc, overrides) = apply(file.clone(), &set)?;
        read(doc).map_err(|e| {
            if let Some(var) = set_by(&overrides, e.field()) {
                return from_var(e, var);
            }
            // No override set the key the error names: one may have broken a rule between
            // it and the key it set (`PALISADE_DEADLINE=5ms` and the default
            // `retry.min_attempt_time`). Those without which the file and the other overrides
            // read, or fail on another key, did.
            let caused: Vec<&(String, String)> = overrides
                .iter()
                .filter(|(var, _)| {
                    let others: Vec<Override> =
                        set.iter().filter(|o| o.1 != *var).cloned().collect();
                    match apply(file.clone(), &others).map(|(doc, _)| read(doc)) {
                        Ok(Ok(_)) => true,
                        Ok(Err(other)) => other.field() != e.field(),
                        // The others need it (a table a deeper variable changes): no telling.
                        Err(_) => false,
                    }
                })
                .collect();
            caused_by(e, &caused)
        })
    }

    /// Checks every value against its rule (reading a file does this already).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key path of the first value that breaks its rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        preset::check_name(&self.name)?;
        self.breaker
            .validate()
            .map_err(|e| breaker_error(e, &self.breaker))?;
        self.builder()?;
        if let Some(route) = &self.route {
            route.validate().map_err(|e| route_error(e, route))?;
        }
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            if endpoint.address.trim().is_empty() {
                return Err(ConfigError::new(
                    format!("endpoints[{i}].address"),
                    "must not be empty",
                ));
            }
        }
        for (name, feature) in &self.features {
            check_feature_name(name)?;
            feature
                .validate()
                .map_err(|e| e.within(&format!("features.{name}")))?;
        }
        Ok(())
    }

    /// The router over [`endpoints`](Self::endpoints) with the `[route]` settings: `connect`
    /// makes each endpoint's service from its entry (a router clones services, so `S: Clone`:
    /// a hyper client, a channel, a `Buffer`); endpoints are keyed by their position in
    /// the file (0, 1, ...) and placed in their tiers. `None` when the file lists no
    /// endpoints.
    ///
    /// ```
    /// use palisade::classify::BoxError;
    /// use palisade::config::PresetConfig;
    /// use tower::service_fn;
    ///
    /// let config = PresetConfig::from_toml(r#"
    ///     name = "llm"
    ///     [route]
    ///     panic_ratio = 0.5
    ///     [[endpoints]]
    ///     address = "east"
    ///     [[endpoints]]
    ///     address = "west"
    ///     tier = 1
    /// "#)?;
    /// let route = config
    ///     .route(|endpoint| {
    ///         let address = endpoint.address.clone();
    ///         service_fn(move |_: ()| {
    ///             let address = address.clone();
    ///             async move { Ok::<_, BoxError>(address) }
    ///         })
    ///     })?
    ///     .expect("the file lists endpoints");
    /// assert_eq!(route.keys().copied().collect::<Vec<_>>(), [0, 1]);
    /// # Ok::<(), palisade::classify::ConfigError>(())
    /// ```
    ///
    /// # Errors
    /// The `[route]` settings' [`ConfigError`], its field prefixed with `route.`.
    pub fn route<S: Clone>(
        &self,
        mut connect: impl FnMut(&EndpointConfig) -> S,
    ) -> Result<Option<Route<Static<S>>>, ConfigError> {
        if self.endpoints.is_empty() {
            return Ok(None);
        }
        let mut builder = Route::builder(std::iter::empty());
        for endpoint in &self.endpoints {
            builder = builder.tier(endpoint.tier, [connect(endpoint)]);
        }
        let config = self.route.unwrap_or_default();
        builder
            .config(config)
            .build()
            .map(Some)
            .map_err(|e| route_error(e, &config))
    }

    /// A switchboard with the file's [`features`](Self::features) registered under their
    /// names; [`Switchboard::feature`] then returns each one with its settings.
    ///
    /// ```
    /// use palisade::config::PresetConfig;
    ///
    /// let config = PresetConfig::from_toml(r#"
    ///     name = "llm"
    ///     [features.summarise]
    ///     failures_to_turn_off = 3
    ///     cooldown = "10s"
    /// "#)?;
    /// let board = config.switchboard()?;
    /// assert!(board.feature("summarise").is_on());
    /// assert_eq!(board.snapshot().len(), 1);
    /// # Ok::<(), palisade::classify::ConfigError>(())
    /// ```
    ///
    /// # Errors
    /// A feature's [`ConfigError`], its field prefixed with `features.NAME.`; an empty or
    /// blank name is an error too.
    pub fn switchboard(&self) -> Result<Switchboard, ConfigError> {
        let board = Switchboard::new();
        for (name, feature) in &self.features {
            check_feature_name(name)?;
            board
                .feature_with(name, *feature)
                .map_err(|e| e.within(&format!("features.{name}")))?;
        }
        Ok(board)
    }

    /// The preset's builder with these settings (add a classifier, then build).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key path of a retry, timeout or breaker setting that
    /// breaks its rule.
    pub fn builder(&self) -> Result<PresetBuilder, ConfigError> {
        self.builder_sharing(Arc::new(self.retry.budget.build()?))
    }

    /// [`builder`](Self::builder), its retry layer drawing on `budget`.
    fn builder_sharing(&self, budget: Arc<Throttled>) -> Result<PresetBuilder, ConfigError> {
        let r = &self.retry;
        let backoff = match r.backoff {
            BackoffConfig::Constant { delay } => Backoff::constant(delay),
            BackoffConfig::Linear { initial, step } => Backoff::linear(initial, step),
            BackoffConfig::Exponential { initial, factor } => Backoff::exponential(initial, factor),
        }
        .with_cap(r.cap);
        let jitter = match r.jitter {
            JitterConfig::None => Jitter::None,
            JitterConfig::Full => Jitter::Full,
            JitterConfig::Equal => Jitter::Equal,
            JitterConfig::Decorrelated => Jitter::Decorrelated,
            JitterConfig::Proportional(p) => Jitter::Proportional(p),
        };
        let mut retry = RetryLayer::builder()
            .budget(budget)
            .name(self.name.as_str())
            .max_attempts(r.max_attempts)
            .wait_for_breaker(r.wait_for_breaker)
            .wait_for_budget(r.wait_for_budget)
            .min_attempt_time(r.min_attempt_time)
            .backoff(backoff)
            .jitter(jitter);
        if let Some(seed) = r.seed {
            retry = retry.seed(seed);
        }
        let retry = retry.build().map_err(|e| retry_error(e, r))?;
        let escalation = self.attempt_timeout.escalate.map(|e| (e.factor, e.cap));
        // The timeout's own rules, checked here so that the error names the key path.
        let mut timeout = crate::timeout::TimeoutLayer::builder(self.attempt_timeout.limit);
        if let Some((factor, cap)) = escalation {
            timeout = timeout.escalate(factor, cap);
        }
        timeout.build().map_err(|e| {
            let field = match e.field() {
                "timeout" => "attempt_timeout.limit".to_owned(),
                other => format!("attempt_timeout.escalate.{other}"),
            };
            ConfigError::new(field, e.rule().to_owned())
        })?;
        if self.deadline.is_zero() {
            return Err(ConfigError::new("deadline", "must be greater than zero"));
        }
        // With retries, one must be able to start: a request has no more time than the
        // deadline, and a retry needs `min_attempt_time` of it left.
        if r.max_attempts > 1 && r.min_attempt_time >= self.deadline {
            return Err(ConfigError::new(
                "retry.min_attempt_time",
                format!(
                    "must be less than `deadline` ({:?}) while `retry.max_attempts` is above 1, \
                     or no retry could ever start (it is {:?})",
                    self.deadline, r.min_attempt_time
                ),
            ));
        }
        // The breaker's rules, checked here too so that the error names the key path.
        self.breaker
            .validate()
            .map_err(|e| breaker_error(e, &self.breaker))?;
        Ok(preset::recommended(self.name.clone())
            .deadline(self.deadline)
            .attempt_timeout(self.attempt_timeout.limit, escalation)
            .breaker(self.breaker)
            .retry(retry))
    }
}

/// A feature's name names it in the switchboard, its metrics and errors: not empty or only
/// whitespace (`[features.""]`). The field quotes it, as TOML does (`features.""`).
fn check_feature_name(name: &str) -> Result<(), ConfigError> {
    if !name.trim().is_empty() {
        return Ok(());
    }
    Err(ConfigError::new(
        format!("features.\"{name}\""),
        "must not be empty or only whitespace: a feature is named by its key \
         (`[features.summarise]`)",
    ))
}

/// A retry layer's error with its field as the file's key path: the layer names the backoff's
/// cap `backoff.cap` (the file's `retry.cap`), its growth factor `backoff.factor` (the file's
/// `retry.backoff.exponential.factor`) and a proportional jitter `jitter` (the file's
/// `retry.jitter.proportional`).
fn retry_error(e: ConfigError, retry: &RetryConfig) -> ConfigError {
    let field = match (e.field(), retry.backoff, retry.jitter) {
        ("backoff.cap", ..) => "cap",
        ("backoff.factor", BackoffConfig::Exponential { .. }, _) => "backoff.exponential.factor",
        ("jitter", _, JitterConfig::Proportional(_)) => "jitter.proportional",
        _ => return e.within("retry"),
    };
    ConfigError::new(field, e.rule().to_owned()).within("retry")
}

/// A breaker's error with its field as the file's key path: the breaker names its window's
/// settings `window` and `window.calls`, the file writes the window's kind between them
/// (`breaker.window.count`, `breaker.window.recent.calls`, `breaker.window.time.span`).
fn breaker_error(e: ConfigError, breaker: &BreakerConfig) -> ConfigError {
    let kind = match breaker.window {
        palisade_breaker::Window::Count(_) => "count",
        palisade_breaker::Window::Time { .. } => "time",
        palisade_breaker::Window::Recent { .. } => "recent",
        _ => return e.within("breaker"),
    };
    let field = match e.field() {
        "window" => format!("window.{kind}"),
        field => match field.strip_prefix("window.") {
            Some(rest) if !rest.starts_with(&format!("{kind}.")) && rest != kind => {
                format!("window.{kind}.{rest}")
            }
            _ => return e.within("breaker"),
        },
    };
    ConfigError::new(field, e.rule().to_owned()).within("breaker")
}

/// A router's error with its field as the file's key path: the router names the ramp's
/// settings `health.ramp.steps`, `health.ramp.window`, the file writes the ramp's kind between
/// (`route.health.ramp.steps.steps`, `route.health.ramp.linear.window`).
fn route_error(e: ConfigError, route: &RouteConfig) -> ConfigError {
    let kind = match route.health.ramp {
        palisade_route::Ramp::Steps { .. } => "steps",
        palisade_route::Ramp::Linear { .. } => "linear",
        _ => return e.within("route"),
    };
    let field = match e.field().strip_prefix("health.ramp.") {
        Some(rest) if !rest.starts_with(&format!("{kind}.")) => {
            format!("health.ramp.{kind}.{rest}")
        }
        _ => return e.within("route"),
    };
    ConfigError::new(field, e.rule().to_owned()).within("route")
}

/// An override: the key path a variable names (its levels in lower case), the variable, and
/// its value.
type Override = (Vec<String>, String, String);

/// Applies the overrides `set` (in the order they apply) to the file's document `doc`, and
/// returns it with each override's variable and the key path it set, as errors spell it
/// (`endpoints[1].tier`, `features.web-search.cooldown`), to name the variable in an error
/// about what it set.
fn apply(
    mut doc: toml::Table,
    set: &[Override],
) -> Result<(toml::Table, Vec<(String, String)>), ConfigError> {
    let mut overrides: Vec<(String, String)> = Vec::new();
    // Each key path an override set, with its variable and value: two variables naming the
    // same key (in two cases, or a feature by two spellings) must agree.
    let mut values: BTreeMap<String, (&str, &str, toml::Value)> = BTreeMap::new();
    for (keys, var, raw) in set {
        let value = parse_value(raw);
        let path = set_var(&mut doc, var, keys, value.clone()).map_err(|e| from_var(e, var))?;
        if let Some((other, other_raw, other_value)) = values.get(&path)
            && other_raw != raw
            && *other_value != value
        {
            return Err(set_twice(path, other, var));
        }
        values.insert(path.clone(), (var, raw, value));
        overrides.push((var.clone(), path));
    }
    Ok((doc, overrides))
}

/// Reads the document `doc`, overrides applied, as a [`PresetConfig`], and checks it.
fn read(mut doc: toml::Table) -> Result<PresetConfig, ConfigError> {
    let caps = DefaultCaps::left_out_by(&doc);
    // As written, to quote a value of the wrong shape without the defaults filled in.
    let written = doc.clone();
    keep_defaults(&mut doc);
    if let Some(e) = empty_kind(&doc, &written) {
        return Err(e);
    }
    let mut config: PresetConfig = serde_path_to_error::deserialize(toml::Value::Table(doc))
        .map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().message().to_owned();
            if let Some(e) = wrong_shape(&path, &message, &written) {
                return e;
            }
            ConfigError::new(
                if path == "." {
                    "(file)".to_owned()
                } else {
                    path
                },
                in_file_words(&message),
            )
        })?;
    caps.raise(&mut config);
    config.validate()?;
    Ok(config)
}

/// The variable among `overrides` (variables and the key paths they set) that set `field`, or
/// a table holding it; the last one, as it won. Else one that set a key inside `field`:
/// `PALISADE_DEADLINE__SECS` made `deadline` a table, which is the error.
fn set_by<'o>(overrides: &'o [(String, String)], field: &str) -> Option<&'o str> {
    let within = |inner: &str, outer: &str| {
        inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    };
    overrides
        .iter()
        .rev()
        .find(|(_, path)| within(field, path))
        .or_else(|| overrides.iter().rev().find(|(_, path)| within(path, field)))
        .map(|(var, _)| var.as_str())
}

/// `e`, about a key no override set, naming the overrides (variables and the key paths they
/// set) that caused it: "`retry.min_attempt_time` (from `PALISADE_DEADLINE`, which set
/// `deadline`) must be less than `deadline` …". With none, `e` as it is.
fn caused_by(e: ConfigError, caused: &[&(String, String)]) -> ConfigError {
    if caused.is_empty() {
        return e;
    }
    let named: Vec<String> = caused
        .iter()
        .map(|(var, path)| format!("`{var}`, which set `{path}`"))
        .collect();
    ConfigError::new(
        e.field().to_owned(),
        format!("(from {}) {}", named.join(", and "), e.rule()),
    )
}

/// serde's message in a configuration file's words: `expected struct RetryConfig` and
/// `expected struct variant Window::Time` (Rust types' names) read `expected a table of
/// settings`; `u32`, `f64`, `a boolean`, `a sequence` read as [`serde_off`]'s messages do
/// (`a whole number, at least 0`, `a number`, `true or false`, `an array`), and a `map` or
/// `sequence` found reads `table` or `array`.
///
/// [`serde_off`]: palisade_core::serde_off
fn in_file_words(message: &str) -> String {
    const STRUCT: &str = "expected struct ";
    let message = message.trim_end();
    let message = match message.find(STRUCT) {
        None => message.to_owned(),
        Some(at) => {
            let rest = &message[at + STRUCT.len()..];
            let rest = rest.strip_prefix("variant ").unwrap_or(rest);
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            format!(
                "{}expected a table of settings{}",
                &message[..at],
                &rest[end..]
            )
        }
    };
    let Some((found, expected)) = message.rsplit_once(", expected ") else {
        return message;
    };
    let found = match found {
        "invalid type: map" => "invalid type: table",
        "invalid type: sequence" => "invalid type: array",
        found => found,
    };
    let expected = match expected {
        "u8" => "a whole number from 0 to 255",
        "u16" | "u32" | "u64" | "usize" => "a whole number, at least 0",
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        "a sequence" => "an array",
        expected => expected,
    };
    format!("{found}, expected {expected}")
}

/// The keys whose value takes one of a few shapes (a kind of backoff, window or ramp; a word
/// or a table; a table or `"off"`), with those shapes as a file writes them. serde's error
/// for a value of another shape speaks of Rust (`invalid type: unit variant, expected newtype
/// variant`, `expected string only`, `struct variant BackoffConfig::Exponential`), and names
/// the kind given as a key (`retry.backoff.exponential` for `backoff = "exponential"`); the
/// error names the key and these shapes instead ([`wrong_shape`]). The kinds are serde's to
/// read: a kind missing here is still read, only not offered.
const SHAPES: [(&str, &str); 9] = [
    (
        "retry.backoff",
        "a table naming one kind of backoff: `{ constant = { delay = \"1s\" } }`, \
         `{ linear = { initial = \"1s\", step = \"1s\" } }` or \
         `{ exponential = { initial = \"1s\", factor = 2.0 } }`",
    ),
    (
        "retry.jitter",
        "`\"none\"`, `\"full\"`, `\"equal\"`, `\"decorrelated\"`, or `{ proportional = 0.1 }` \
         (a fraction of the delay, 0 to 1)",
    ),
    (
        "attempt_timeout.escalate",
        "a table `{ factor = 2.0, cap = \"30s\" }`, or `\"off\"` for a fixed limit",
    ),
    (
        "breaker.window",
        "a table naming one kind of window: `{ count = 100 }`, \
         `{ time = { span = \"10s\", buckets = 10 } }` or \
         `{ recent = { calls = 30, within = \"1s\", min_calls = 10 } }`",
    ),
    (
        "breaker.failure_rate",
        "a table `{ ratio = 0.5, min_calls = 20 }`, or `\"off\"` to turn the rule off",
    ),
    (
        "breaker.slow_call_rate",
        "a table `{ ratio = 0.5, min_calls = 20 }`, or `\"off\"` to turn the rule off",
    ),
    (
        "breaker.throttle",
        "a table `{ k = 2.0, window = 100 }`, or `\"off\"` to turn the rule off",
    ),
    (
        "breaker.cancel",
        "`\"ignore\"`, `\"failure\"`, or `{ failure_after = \"5s\" }`",
    ),
    (
        "route.health.ramp",
        "a table naming one kind of ramp: `{ steps = { steps = 5, interval = \"30s\" } }` or \
         `{ linear = { window = \"1m\", min_ratio = 0.1, aggression = 1.0 } }`",
    ),
];

/// serde's error `message` at the key path `path` as an error on a key of [`SHAPES`], when it
/// is about the shape of the key's value: the value as `doc` (the document as written, the
/// overrides applied) has it, and the shapes the key takes. An error inside a shape that is
/// right (`retry.backoff.linear` without `step`, `breaker.window.count = "x"`) is left as it
/// is.
fn wrong_shape(path: &str, message: &str, doc: &toml::Table) -> Option<ConfigError> {
    let (key, shapes) = SHAPES.iter().find(|(key, _)| {
        path.strip_prefix(key).is_some_and(|rest| {
            // The key itself: its type, an unknown kind, two kinds in one table.
            (rest.is_empty()
                && ["invalid type", "invalid length", "unknown variant", "wanted exactly"]
                    .iter()
                    .any(|start| message.starts_with(start)))
                // A kind the key names (`exponential` in `{ exponential = 5 }`, or the word
                // `"exponential"`) with the wrong settings, or none; or a kind that takes no
                // settings given some (`{ full = { x = 1 } }`: toml's "expected empty table").
                || (rest.strip_prefix('.').is_some_and(|kind| !kind.contains(['.', '[']))
                    && (message.contains("variant")
                        || message.starts_with("expected table")
                        || message.starts_with("expected empty")))
        })
    })?;
    shape_error(key, shapes, doc)
}

/// A key of [`SHAPES`] whose value in `doc` (defaults filled in) is a table naming a kind
/// with nothing for its settings, `{ full = {} }` or `{ full = [] }`, as an error on the key
/// quoting `written` (the document as written): a kind that takes no settings is a word
/// (`jitter = "full"`; the toml crate reads the table as the word, which no shape offers), and
/// one that takes settings needs them (`{ constant = {} }` has no delay, `{ count = {} }` no
/// count). A kind whose settings the defaults hold is filled in before this
/// (`backoff = { exponential = {} }` is the default backoff), as any table keeps its defaults.
fn empty_kind(doc: &toml::Table, written: &toml::Table) -> Option<ConfigError> {
    SHAPES.iter().find_map(|(key, shapes)| {
        let table = lookup(doc, key)?.as_table()?;
        let (_, settings) = table.iter().next().filter(|_| table.len() == 1)?;
        let empty = match settings {
            toml::Value::Table(t) => t.is_empty(),
            toml::Value::Array(a) => a.is_empty(),
            _ => false,
        };
        empty.then(|| shape_error(key, shapes, written)).flatten()
    })
}

/// The value at the dotted key path `key` in `doc`.
fn lookup<'d>(doc: &'d toml::Table, key: &str) -> Option<&'d toml::Value> {
    let mut levels = key.split('.');
    let first = doc.get(levels.next()?)?;
    levels.try_fold(first, |value, level| value.get(level))
}

/// The error on `key` (one of [`SHAPES`]) that it takes `shapes`, quoting its value in `doc`.
fn shape_error(key: &'static str, shapes: &str, doc: &toml::Table) -> Option<ConfigError> {
    let value = lookup(doc, key)?;
    // As serde says what it found (`string "x"`, `integer `5``), the value quoted when short.
    let kind = match value {
        toml::Value::String(_) => "string",
        toml::Value::Integer(_) => "integer",
        toml::Value::Float(_) => "floating point",
        toml::Value::Boolean(_) => "boolean",
        toml::Value::Datetime(_) => "date-time",
        toml::Value::Array(_) => "array",
        toml::Value::Table(_) => "table",
    };
    let text = value.to_string();
    let found = if text.len() > 60 || text.contains('\n') {
        kind.to_owned()
    } else if value.is_str() {
        format!("{kind} {text}")
    } else {
        format!("{kind} `{text}`")
    };
    Some(ConfigError::new(
        key,
        format!("invalid value: {found}, expected {shapes}"),
    ))
}

/// Which caps a document leaves to their defaults, found before [`keep_defaults`] fills them
/// in: a cap the file did not write yields to a longer delay the file did write, rather than
/// refusing it (`limit = "40s"` alone is not refused for the default escalation's 30 s cap,
/// nor `open_duration = "5s"` for the breaker's default 750 ms `max_open_duration`, nor the
/// router's `cooldown = "2m"` for its default 60 s `max_cooldown`).
struct DefaultCaps {
    /// `attempt_timeout.escalate.cap`, when the escalation is on.
    timeout: bool,
    /// `retry.cap`.
    retry: bool,
    /// `breaker.max_open_duration`.
    breaker: bool,
    /// `route.max_cooldown`.
    cooldown: bool,
    /// `route.outlier.max_ejection`, when `route.outlier` is a table or left out.
    ejection: bool,
}

impl DefaultCaps {
    fn left_out_by(doc: &toml::Table) -> Self {
        let section = |name: &str| doc.get(name).and_then(toml::Value::as_table);
        // Whether `table` (`None`: left out) leaves `key` out.
        let lacks =
            |table: Option<&toml::Table>, key: &str| table.is_none_or(|t| !t.contains_key(key));
        // The same for the table written at `key` of `table`: left out, or a table without
        // `cap`; any other value ("off", or one serde refuses) has no default cap to raise.
        let lacks_in = |table: Option<&toml::Table>, key: &str, cap: &str| match table
            .and_then(|t| t.get(key))
        {
            None => true,
            Some(toml::Value::Table(inner)) => !inner.contains_key(cap),
            Some(_) => false,
        };
        let route = section("route");
        DefaultCaps {
            timeout: lacks_in(section("attempt_timeout"), "escalate", "cap"),
            retry: lacks(section("retry"), "cap"),
            breaker: lacks(section("breaker"), "max_open_duration"),
            cooldown: lacks(route, "max_cooldown"),
            ejection: lacks_in(route, "outlier", "max_ejection"),
        }
    }

    /// Raises each defaulted cap to the delay it caps, if that is longer: the timeout's limit,
    /// the backoff's first delay (the retry layer's own rule for a backoff without a cap), the
    /// breaker's first open period, the router's cool-down without a hint and first ejection.
    fn raise(&self, config: &mut PresetConfig) {
        let timeout = &mut config.attempt_timeout;
        if let (true, Some(escalate)) = (self.timeout, timeout.escalate.as_mut()) {
            escalate.cap = escalate.cap.max(timeout.limit);
        }
        if self.retry {
            let first = match config.retry.backoff {
                BackoffConfig::Constant { delay } => delay,
                BackoffConfig::Linear { initial, .. }
                | BackoffConfig::Exponential { initial, .. } => initial,
            };
            config.retry.cap = config.retry.cap.max(first);
        }
        if self.breaker {
            let breaker = &mut config.breaker;
            breaker.max_open_duration = breaker.max_open_duration.max(breaker.open_duration);
        }
        if let Some(route) = config.route.as_mut() {
            if self.cooldown {
                route.max_cooldown = route.max_cooldown.max(route.cooldown);
            }
            if self.ejection {
                let outlier = &mut route.outlier;
                outlier.max_ejection = outlier.max_ejection.max(outlier.base_ejection);
            }
        }
    }
}

/// Fills in what the document's sections leave out of a nested table from the defaults, so
/// that `[breaker.failure_rate]` with only `ratio`, or
/// `PALISADE_ATTEMPT_TIMEOUT__ESCALATE__FACTOR` alone, keeps the default of the other keys
/// (serde fills in only the fields of a struct marked `#[serde(default)]`, and `Rate`,
/// `Escalation` and the backoff's variants are not: in Rust each of their fields is needed).
/// The defaults are the sections' `Default`s, serialized, so that they have one source.
///
/// A section the document lacks is left out (serde gives it its default, and `[route]` stays
/// `None`). A table that shares no key with its default is left as it is: an enum's other
/// variant (`backoff = { linear = { … } }` where the default is exponential) has no defaults
/// to keep, and serde says what it misses.
fn keep_defaults(doc: &mut toml::Table) {
    let defaults = PresetConfig {
        name: String::new(),
        deadline: defaults::deadline(),
        attempt_timeout: TimeoutConfig::default(),
        retry: RetryConfig::default(),
        breaker: BreakerConfig::default(),
        route: Some(RouteConfig::default()),
        endpoints: Vec::new(),
        features: BTreeMap::new(),
    };
    let defaults = toml::Table::try_from(&defaults).expect("the defaults serialize");
    for (key, value) in doc.iter_mut() {
        if let (toml::Value::Table(table), Some(toml::Value::Table(default))) =
            (value, defaults.get(key))
        {
            fill(table, default);
        }
    }

    fn fill(table: &mut toml::Table, defaults: &toml::Table) {
        if !table.is_empty() && !table.keys().any(|key| defaults.contains_key(key)) {
            return;
        }
        for (key, default) in defaults {
            match (table.get_mut(key), default) {
                (None, _) => {
                    table.insert(key.clone(), default.clone());
                }
                (Some(toml::Value::Table(table)), toml::Value::Table(default)) => {
                    fill(table, default)
                }
                // A value the document gives (`"off"` for a table included) is kept.
                _ => {}
            }
        }
    }
}

/// The error of a file that is not TOML: it has no key path yet, so it says where the parser
/// stopped, as a line and a column (1-based, in characters), and what it stopped at when that
/// is a short piece of one line (the key of `duplicate key`, the `30s` of `cap = 30s`), before
/// the parser's message.
fn not_toml(text: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim_end();
    let Some((span, before, at)) = e
        .span()
        .and_then(|span| Some((span.clone(), text.get(..span.start)?, text.get(span)?)))
    else {
        return ConfigError::new("(file)", format!("is not valid TOML: {message}"));
    };
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    if let Some(e) = beyond_i64(text, span, at, (line, column)) {
        return e;
    }
    let at = if at.is_empty() || at.contains('\n') || at.chars().count() > 40 {
        String::new()
    } else {
        format!(" (`{at}`)")
    };
    ConfigError::new(
        "(file)",
        format!("is not valid TOML at line {line}, column {column}{at}: {message}"),
    )
}

/// The error of a file whose integer `at` (at `span` in `text`, at `line` and `column`;
/// decimal, or hexadecimal, octal or binary with TOML's `0x`, `0o` or `0b`) is beyond TOML's
/// integers (an `i64`), when it is one: it names the key, found by reading the file again with
/// a string in its place, and for a seed (a `u64`) above `i64::MAX` says how to write it. The
/// parser's own message ("u64 value was too large") names neither.
fn beyond_i64(
    text: &str,
    span: std::ops::Range<usize>,
    at: &str,
    (line, column): (usize, usize),
) -> Option<ConfigError> {
    // TOML's other bases take no sign.
    let (digits, radix) = match at.get(..2) {
        Some("0x") => (&at[2..], 16),
        Some("0o") => (&at[2..], 8),
        Some("0b") => (&at[2..], 2),
        _ => (at.strip_prefix(['+', '-']).unwrap_or(at), 10),
    };
    let digit = |b: u8| char::from(b).is_digit(radix);
    if !digits.bytes().any(digit)
        || !digits.bytes().all(|b| digit(b) || b == b'_')
        || i64::from_str_radix(&digits.replace('_', ""), radix).is_ok()
    {
        return None;
    }
    // A string no file holds: TOML's escape for a control character, which a file's string
    // cannot hold as it is.
    const MARK: &str = "\u{1}palisade: the integer beyond TOML's";
    let marked = format!(
        "{}\"\\u0001{}\"{}",
        &text[..span.start],
        &MARK[1..],
        &text[span.end..]
    );
    let field = toml::from_str::<toml::Table>(&marked)
        .ok()
        .and_then(|doc| path_to(&toml::Value::Table(doc), MARK, String::new()))
        .unwrap_or_else(|| "(file)".to_owned());
    let (side, bound) = if at.starts_with('-') {
        ("below", i64::MIN.to_string())
    } else {
        ("above", i64::MAX.to_string())
    };
    // A seed (a `u64`) is written as a string of decimal digits; no other integer key takes
    // one.
    let seed = u64::from_str_radix(&digits.replace('_', ""), radix).ok();
    let hint = match seed {
        Some(seed) if field.ends_with(".seed") && !at.starts_with('-') => {
            format!(" (a seed above it is written as a string of digits: `\"{seed}\"`)")
        }
        _ => String::new(),
    };
    Some(ConfigError::new(
        field,
        format!(
            "is not valid TOML at line {line}, column {column}: `{at}` is {side} {bound}, \
             TOML's {} integer{hint}",
            if side == "above" {
                "largest"
            } else {
                "smallest"
            },
        ),
    ))
}

/// The key path, as errors spell it (`retry.seed`, `endpoints[0].tier`), of the string `mark`
/// within `value`, whose own path is `path`.
fn path_to(value: &toml::Value, mark: &str, path: String) -> Option<String> {
    match value {
        toml::Value::String(s) if s == mark => Some(path),
        toml::Value::Table(table) => table.iter().find_map(|(key, value)| {
            let inner = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            path_to(value, mark, inner)
        }),
        toml::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, value)| path_to(value, mark, format!("{path}[{i}]"))),
        _ => None,
    }
}

/// Reads an environment value as TOML when it is one, else as a string. One value: text that
/// reads as a value and then more (`5` and a line `bogus = 1`) is a string, not its first
/// value with the rest dropped.
fn parse_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .filter(|t| t.len() == 1)
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

/// The keyed tables: those whose entries the file names (features by name, endpoints by
/// position), with what an entry is called and whether it is named by its position. An
/// override changes an entry the file defines and never adds one: a misspelled name would
/// otherwise add an entry with default settings, which nothing could tell from a wanted one.
/// Every other table has fixed keys, which serde checks (`deny_unknown_fields`). A map or a
/// list added to [`PresetConfig`] belongs here.
const KEYED: [(&str, &str, bool); 2] = [
    ("features", "feature", false),
    ("endpoints", "endpoint", true),
];

/// Sets the key path `keys` (from the variable `var`) to `value` in `doc`, and returns the
/// key path as errors spell it: a keyed table's entry by the file's name for it, or by its
/// position in brackets (`features.web-search.cooldown`, `endpoints[1].tier`).
fn set_var(
    doc: &mut toml::Table,
    var: &str,
    keys: &[String],
    value: toml::Value,
) -> Result<String, ConfigError> {
    let [section, name, rest @ ..] = keys else {
        // A top-level key, a keyed table's name included (a whole table, read like the file).
        return set(doc, "", keys, value).map(|()| keys.join("."));
    };
    let Some(&(_, kind, by_position)) = KEYED.iter().find(|(keyed, ..)| keyed == section) else {
        return set(doc, "", keys, value).map(|()| keys.join("."));
    };
    let (path, entry) = keyed_entry(doc, var, (section, kind, by_position), name)?;
    match rest {
        [] => {
            *entry = value;
            Ok(path)
        }
        _ => {
            let table = entry
                .as_table_mut()
                .ok_or_else(|| not_a_table(path.clone()))?;
            set(table, &format!("{path}."), rest, value)?;
            Ok(format!("{path}.{}", rest.join(".")))
        }
    }
}

/// The entry of the keyed table `section` (one of [`KEYED`]) that `name` (as the variable
/// `var` spells it) names, with its key path: an error naming the variable when the file
/// defines none.
fn keyed_entry<'d>(
    doc: &'d mut toml::Table,
    var: &str,
    (section, kind, by_position): (&str, &str, bool),
    name: &str,
) -> Result<(String, &'d mut toml::Value), ConfigError> {
    let field = if by_position {
        format!("{section}[{name}]")
    } else {
        format!("{section}.{name}")
    };
    match doc.get_mut(section) {
        Some(toml::Value::Array(entries)) if by_position => {
            let known = entries.len();
            let position = name.parse::<usize>().ok().filter(|&i| i < known);
            match position {
                Some(i) => Ok((format!("{section}[{i}]"), &mut entries[i])),
                None => {
                    let defined = match known {
                        0 => "none".to_owned(),
                        1 => "one, 0".to_owned(),
                        n => format!("{n}, 0 to {}", n - 1),
                    };
                    Err(undefined(
                        field,
                        var,
                        kind,
                        name,
                        &format!("it defines {defined}"),
                    ))
                }
            }
        }
        Some(toml::Value::Table(entries)) if !by_position => {
            let known: Vec<&String> = entries.keys().collect();
            let key = entry_key(&known, name).map_err(|others| {
                let hint = match others {
                    Known::Several(matches) => format!("it could be {}", listed(&matches)),
                    Known::Nearest(Some(nearest)) => format!("did you mean `{nearest}`?"),
                    Known::Nearest(None) if known.is_empty() => "it defines none".to_owned(),
                    Known::Nearest(None) => format!("it defines {}", listed(&known)),
                };
                undefined(field, var, kind, name, &hint)
            })?;
            let path = format!("{section}.{key}");
            let entry = entries.get_mut(&key).expect("the key was found among them");
            Ok((path, entry))
        }
        None => Err(undefined(field, var, kind, name, "it defines none")),
        Some(_) => Err(ConfigError::new(
            section.to_owned(),
            if by_position {
                "is not an array of tables, so an environment override cannot set a key inside it"
            } else {
                "is not a table, so an environment override cannot set a key inside it"
            },
        )),
    }
}

/// Why no entry of a keyed table is the one a variable names.
enum Known<'k> {
    /// Several spell as the variable does (`web-search` and `web.search` as `web_search`).
    Several(Vec<&'k String>),
    /// None does; the nearest, when one is near enough to be a typo of it.
    Nearest(Option<&'k String>),
}

/// The entry among `keys` that `name` (as a variable spells it) names: the one written so, or
/// else the one written so in another case, or whose [`spelling`] it is.
fn entry_key<'k>(keys: &[&'k String], name: &str) -> Result<String, Known<'k>> {
    if let Some(key) = keys.iter().find(|key| **key == name) {
        return Ok((*key).clone());
    }
    let matches: Vec<&String> = keys
        .iter()
        .copied()
        // The key is read in any case: `Web-Search` as the file writes it is `web-search` here.
        .filter(|key| key.eq_ignore_ascii_case(name) || spelling(key) == name)
        .collect();
    match matches[..] {
        [key] => Ok(key.clone()),
        [] => {
            // A typo is a few edits away: at most 2, or a third of the name when longer.
            let near = (name.len() / 3).max(2);
            let nearest = keys
                .iter()
                .copied()
                .map(|key| (strsim::levenshtein(&spelling(key), name), key))
                .filter(|&(d, _)| d <= near)
                .min_by_key(|&(d, _)| d)
                .map(|(_, key)| key);
            Err(Known::Nearest(nearest))
        }
        _ => Err(Known::Several(matches)),
    }
}

/// How a variable spells an entry's name: in lower case, with `_` for every character but
/// ASCII letters and digits (`web-search` is `web_search`).
fn spelling(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// `a`, `b` or `c`, quoted.
fn listed(names: &[&String]) -> String {
    let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.concat(),
    }
}

/// The error of a variable naming an entry of a keyed table the file does not define.
fn undefined(field: String, var: &str, kind: &str, name: &str, hint: &str) -> ConfigError {
    ConfigError::new(
        field,
        format!(
            "is not defined: `{var}` names {kind} `{name}`, which the file does not define \
             ({hint}); an environment override changes the {kind}s the file defines, it \
             cannot add one"
        ),
    )
}

/// `e`, about what the variable `var` set, naming it: "`retry.tries` (from
/// `PALISADE_RETRY__TRIES`) unknown field …". An error that names it already is kept as it is.
fn from_var(e: ConfigError, var: &str) -> ConfigError {
    if e.rule().contains(&format!("`{var}`")) {
        return e;
    }
    ConfigError::new(e.field().to_owned(), format!("(from `{var}`) {}", e.rule()))
}

/// The error of two variables naming the same key with different values (`PALISADE_DEADLINE`
/// and `palisade_deadline`): which one wins would depend on nothing the user wrote. The
/// variables are named in order, whatever the order of the environment; their values are not
/// (a value may hold a secret, as an address with a password).
fn set_twice(field: String, var: &str, other: &str) -> ConfigError {
    let (first, second) = if var < other {
        (var, other)
    } else {
        (other, var)
    };
    ConfigError::new(
        field,
        format!(
            "is set by two variables with different values, `{first}` and `{second}`: both name \
             this key (a variable's name is read in any case), and neither is taken over the \
             other; set one"
        ),
    )
}

/// The error of a variable whose name, past the prefix, has an empty level (`PALISADE_`,
/// `PALISADE_RETRY__`, `PALISADE_RETRY____CAP`): it names no key, so its field is
/// `(environment)`.
fn names_no_key(var: &str) -> ConfigError {
    ConfigError::new(
        "(environment)",
        format!(
            "has a variable naming no key, `{var}`: a variable is `{ENV_PREFIX}` followed by the \
             key's path, its levels joined by `__` (`{ENV_PREFIX}RETRY__MAX_ATTEMPTS`)"
        ),
    )
}

/// The most levels a variable's key path may have: far more than any key has
/// (`route.health.ramp.linear.window` has 5).
const MAX_LEVELS: usize = 16;

/// The error of a variable whose key path has more than [`MAX_LEVELS`] levels.
fn too_deep(var: &str, levels: usize) -> ConfigError {
    ConfigError::new(
        "(environment)",
        format!(
            "has a variable naming a key {levels} levels deep, `{var}`: no key is more than \
             {MAX_LEVELS} levels deep"
        ),
    )
}

fn not_a_table(field: String) -> ConfigError {
    ConfigError::new(
        field,
        "is not a table, so an environment override cannot set a key inside it",
    )
}

/// Sets `keys` to `value` inside `doc`, whose key path is `prefix`: tables on the way are
/// added when missing (sections with fixed keys, checked when the document is read).
fn set(
    doc: &mut toml::Table,
    prefix: &str,
    keys: &[String],
    value: toml::Value,
) -> Result<(), ConfigError> {
    let (last, parents) = keys.split_last().expect("split always yields one key");
    let mut table = doc;
    for (i, key) in parents.iter().enumerate() {
        let entry = table
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| not_a_table(format!("{prefix}{}", keys[..=i].join("."))))?;
    }
    table.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTED: &str = r#"
        name = "llm"
        [route]
        panic_ratio = 0.25
        cooldown = "2s"
        outlier = { consecutive_failures = 3, base_ejection = "10s", max_ejection_ratio = 0.5 }
        health = { degraded_after = 2, ramp = { linear = { window = "1m", min_ratio = 0.1, aggression = 1.0 } } }
        [[endpoints]]
        address = "east"
        [[endpoints]]
        address = "west"
        [[endpoints]]
        address = "backup"
        tier = 1
        [features.summarise]
        failures_to_turn_off = 3
        cooldown = "10s"
        [features.search]
        window = "2m"
    "#;

    #[test]
    fn routes_endpoints_and_features_from_a_file() {
        let config = PresetConfig::from_toml(ROUTED).unwrap();
        let route = config.route.unwrap();
        assert_eq!(route.panic_ratio, Some(0.25));
        assert_eq!(route.cooldown, Duration::from_secs(2));
        assert_eq!(route.outlier.consecutive_failures, Some(3));
        assert_eq!(route.outlier.base_ejection, Duration::from_secs(10));
        assert_eq!(route.outlier.max_ejection_ratio, 0.5);
        // What the file leaves out keeps its default, inside a section too.
        assert_eq!(route.outlier.max_ejection, Duration::from_secs(300));
        assert_eq!(route.health.degraded_after, 2);
        assert_eq!(route.health.failed_after, 10);
        assert_eq!(
            route.health.ramp,
            palisade_route::Ramp::Linear {
                window: Duration::from_secs(60),
                min_ratio: 0.1,
                aggression: 1.0
            }
        );
        let addresses: Vec<_> = config
            .endpoints
            .iter()
            .map(|e| (e.address.as_str(), e.tier))
            .collect();
        assert_eq!(addresses, [("east", 0), ("west", 0), ("backup", 1)]);
        assert_eq!(config.features["summarise"].failures_to_turn_off, Some(3));
        assert_eq!(
            config.features["summarise"].cooldown,
            Duration::from_secs(10)
        );
        assert_eq!(config.features["search"].window, Duration::from_secs(120));
        assert_eq!(
            config.features["search"].cooldown,
            FeatureConfig::default().cooldown
        );
        // A round trip through TOML keeps everything.
        let text = toml::to_string(&config).unwrap();
        assert_eq!(PresetConfig::from_toml(&text).unwrap(), config);
    }

    #[tokio::test(start_paused = true)]
    async fn the_route_and_switchboard_are_built_as_the_file_says() {
        use tower::{Service, ServiceExt};
        let config = PresetConfig::from_toml(ROUTED).unwrap();
        let mut seen = Vec::new();
        let mut route = config
            .route(|endpoint| {
                seen.push(endpoint.address.clone());
                let address = endpoint.address.clone();
                tower::service_fn(move |_: ()| {
                    let address = address.clone();
                    async move { Ok::<_, palisade_core::BoxError>(address) }
                })
            })
            .unwrap()
            .unwrap();
        assert_eq!(seen, ["east", "west", "backup"]);
        assert_eq!(route.keys().copied().collect::<Vec<_>>(), [0, 1, 2]);
        // Tier 0 is healthy and enough: the backup in tier 1 takes nothing.
        for _ in 0..50 {
            let answer = route.ready().await.unwrap().call(()).await.unwrap();
            assert_ne!(answer, "backup");
        }
        let board = config.switchboard().unwrap();
        let mut names: Vec<_> = board.snapshot().into_iter().map(|s| s.name).collect();
        names.sort();
        assert_eq!(names, ["search", "summarise"]);
        assert!(board.feature("summarise").is_on());
        // A file without endpoints has no router.
        let plain = PresetConfig::from_toml("name = \"x\"").unwrap();
        assert!(plain.route(|_| ()).unwrap().is_none());
        assert!(plain.switchboard().unwrap().snapshot().is_empty());
    }

    #[test]
    fn route_and_feature_errors_name_their_key_path() {
        let err = |text: &str| PresetConfig::from_toml(text).unwrap_err();
        let e = err(
            "name = \"x\"\n[route]\noutlier = { max_ejection_ratio = 10.0 }\n[[endpoints]]\naddress = \"a\"",
        );
        assert_eq!(e.field(), "route.outlier.max_ejection_ratio");
        let e = err(
            "name = \"x\"\n[route]\nhealth = { ramp = { steps = { steps = 0, interval = \"1s\" } } }\n[[endpoints]]\naddress = \"a\"",
        );
        assert_eq!(e.field(), "route.health.ramp.steps.steps");
        // Settings without endpoints are for a router fed by discovery: no error, no router.
        let settings_only =
            PresetConfig::from_toml("name = \"x\"\n[route]\npanic_ratio = 0.25").unwrap();
        assert_eq!(settings_only.route.unwrap().panic_ratio, Some(0.25));
        assert!(settings_only.route(|_| ()).unwrap().is_none());
        let e = err("name = \"x\"\n[[endpoints]]\naddress = \"a\"\n[[endpoints]]\naddress = \" \"");
        assert_eq!(e.field(), "endpoints[1].address");
        let e = err("name = \"x\"\n[[endpoints]]\naddress = \"a\"\nweight = 2");
        assert!(e.field().starts_with("endpoints"), "{e}");
        assert!(e.rule().contains("unknown field"), "{e}");
        let e = err("name = \"x\"\n[features.summarise]\nfailures_to_turn_off = 0");
        assert_eq!(e.field(), "features.summarise.failures_to_turn_off");
        let e = err("name = \"x\"\n[features.summarise]\ncooldwn = \"1s\"");
        assert_eq!(e.field(), "features.summarise.cooldwn");
        assert!(e.rule().contains("unknown field"), "{e}");
        let e = err("name = \"x\"\n[route]\nseed = \"seven\"\n[[endpoints]]\naddress = \"a\"");
        assert_eq!(e.field(), "route.seed");
    }

    #[test]
    fn environment_overrides_reach_routes_and_features() {
        let config = PresetConfig::from_toml_with_env(
            ROUTED,
            [
                ("PALISADE_FEATURES__SUMMARISE__COOLDOWN", "45s"),
                ("PALISADE_ROUTE__OUTLIER__CONSECUTIVE_FAILURES", "7"),
            ],
        )
        .unwrap();
        assert_eq!(
            config.features["summarise"].cooldown,
            Duration::from_secs(45)
        );
        assert_eq!(config.route.unwrap().outlier.consecutive_failures, Some(7));
    }

    /// The error of reading `text` with the variable `var` set to `value`.
    fn env_error(text: &str, var: &str, value: &str) -> ConfigError {
        PresetConfig::from_toml_with_env(text, [(var, value)]).unwrap_err()
    }

    #[test]
    fn an_override_naming_a_feature_the_file_does_not_define_is_an_error() {
        // Misspelled: without the rule it would add a feature `sumarise` with default
        // settings, and leave `summarise` as it was.
        let var = "PALISADE_FEATURES__SUMARISE__COOLDOWN";
        let e = env_error(ROUTED, var, "45s");
        assert_eq!(e.field(), "features.sumarise");
        assert_eq!(
            e.rule(),
            "is not defined: `PALISADE_FEATURES__SUMARISE__COOLDOWN` names feature `sumarise`, \
             which the file does not define (did you mean `summarise`?); an environment \
             override changes the features the file defines, it cannot add one"
        );
        // A whole entry, misspelled, too.
        let e = env_error(ROUTED, "PALISADE_FEATURES__SERACH", "{ cooldown = \"5s\" }");
        assert_eq!(e.field(), "features.serach");
        assert!(e.rule().contains("(did you mean `search`?)"), "{e}");
        // Nothing near: the names the file defines.
        let e = env_error(ROUTED, "PALISADE_FEATURES__TRANSLATE__COOLDOWN", "5s");
        assert_eq!(e.field(), "features.translate");
        assert!(
            e.rule()
                .contains("`PALISADE_FEATURES__TRANSLATE__COOLDOWN` names feature `translate`"),
            "{e}"
        );
        assert!(
            e.rule().contains("(it defines `search` or `summarise`)"),
            "{e}"
        );
        // One name only: that name, alone.
        let e = env_error(
            "name = \"x\"\n[features.summarise]",
            "PALISADE_FEATURES__TRANSLATE__COOLDOWN",
            "5s",
        );
        assert!(e.rule().contains("(it defines `summarise`)"), "{e}");
        // A file without features defines none for an override to change.
        let e = env_error(
            "name = \"x\"",
            "PALISADE_FEATURES__SUMMARISE__COOLDOWN",
            "5s",
        );
        assert_eq!(e.field(), "features.summarise");
        assert!(e.rule().contains("(it defines none)"), "{e}");
        let e = env_error(
            "name = \"x\"\n[features]",
            "PALISADE_FEATURES__SUMMARISE",
            "{}",
        );
        assert!(e.rule().contains("(it defines none)"), "{e}");
        // What the file defines changes, by field or whole.
        let config = PresetConfig::from_toml_with_env(
            ROUTED,
            [
                ("PALISADE_FEATURES__SEARCH", "{ cooldown = \"5s\" }"),
                ("PALISADE_FEATURES__SUMMARISE__FAILURES_TO_TURN_OFF", "off"),
            ],
        )
        .unwrap();
        assert_eq!(config.features["search"].cooldown, Duration::from_secs(5));
        assert_eq!(
            config.features["search"].window,
            FeatureConfig::default().window,
            "replaced whole"
        );
        assert_eq!(config.features["summarise"].failures_to_turn_off, None);
        assert_eq!(config.features.len(), 2);
        // A field of a defined feature is checked as in the file.
        let e = env_error(ROUTED, "PALISADE_FEATURES__SEARCH__COOLDWN", "5s");
        assert_eq!(e.field(), "features.search.cooldwn");
        assert!(e.rule().contains("unknown field"), "{e}");
        // The whole table, named by its own key, is replaced, and read like a file.
        let config = PresetConfig::from_toml_with_env(
            ROUTED,
            [("PALISADE_FEATURES", "{ translate = { cooldown = \"1s\" } }")],
        )
        .unwrap();
        assert_eq!(config.features.keys().collect::<Vec<_>>(), ["translate"]);
        let e = env_error(
            ROUTED,
            "PALISADE_FEATURES",
            "{ translate = { cooldwn = \"1s\" } }",
        );
        assert_eq!(e.field(), "features.translate.cooldwn");
    }

    #[test]
    fn an_override_names_a_feature_as_a_variable_can_spell_it() {
        let file = "name = \"x\"\n[features.web-search]\n[features.Translate]";
        let config = PresetConfig::from_toml_with_env(
            file,
            [
                ("PALISADE_FEATURES__WEB_SEARCH__COOLDOWN", "5s"),
                ("PALISADE_FEATURES__TRANSLATE__COOLDOWN", "7s"),
            ],
        )
        .unwrap();
        assert_eq!(
            config.features["web-search"].cooldown,
            Duration::from_secs(5)
        );
        assert_eq!(
            config.features["Translate"].cooldown,
            Duration::from_secs(7)
        );
        assert_eq!(config.features.len(), 2);
        // Two names a variable spells alike: it names neither.
        let file = "name = \"x\"\n[features.web-search]\n[features.\"web.search\"]";
        let e = env_error(file, "PALISADE_FEATURES__WEB_SEARCH__COOLDOWN", "5s");
        assert_eq!(e.field(), "features.web_search");
        assert!(
            e.rule()
                .contains("(it could be `web-search` or `web.search`)"),
            "{e}"
        );
    }

    #[test]
    fn an_override_naming_an_endpoint_the_file_does_not_define_is_an_error() {
        // The file's third endpoint changes; there is no fourth to add.
        let config =
            PresetConfig::from_toml_with_env(ROUTED, [("PALISADE_ENDPOINTS__2__TIER", "2")])
                .unwrap();
        assert_eq!(config.endpoints[2].tier, 2);
        assert_eq!(config.endpoints.len(), 3);
        let config = PresetConfig::from_toml_with_env(
            ROUTED,
            [("PALISADE_ENDPOINTS__0", "{ address = \"north\" }")],
        )
        .unwrap();
        assert_eq!(config.endpoints[0], EndpointConfig::new("north"));
        let e = env_error(ROUTED, "PALISADE_ENDPOINTS__3__ADDRESS", "south");
        assert_eq!(e.field(), "endpoints[3]");
        assert_eq!(
            e.rule(),
            "is not defined: `PALISADE_ENDPOINTS__3__ADDRESS` names endpoint `3`, which the \
             file does not define (it defines 3, 0 to 2); an environment override changes the \
             endpoints the file defines, it cannot add one"
        );
        let e = env_error(ROUTED, "PALISADE_ENDPOINTS__EAST__TIER", "1");
        assert_eq!(e.field(), "endpoints[east]");
        let e = env_error("name = \"x\"", "PALISADE_ENDPOINTS__0__ADDRESS", "a");
        assert_eq!(e.field(), "endpoints[0]");
        assert!(e.rule().contains("(it defines none)"), "{e}");
        let e = env_error(
            "name = \"x\"\n[[endpoints]]\naddress = \"a\"",
            "PALISADE_ENDPOINTS__1__ADDRESS",
            "b",
        );
        assert!(e.rule().contains("(it defines one, 0)"), "{e}");
        // A field of a defined endpoint is checked as in the file.
        let e = env_error(ROUTED, "PALISADE_ENDPOINTS__1__WEIGHT", "2");
        assert!(e.field().starts_with("endpoints"), "{e}");
        assert!(e.rule().contains("unknown field"), "{e}");
        // The whole list, named by its own key, is replaced.
        let config = PresetConfig::from_toml_with_env(
            ROUTED,
            [(
                "PALISADE_ENDPOINTS",
                "[{ address = \"a\" }, { address = \"b\" }]",
            )],
        )
        .unwrap();
        assert_eq!(config.endpoints.len(), 2);
    }

    #[test]
    fn typos_are_a_few_edits_away() {
        let known = ["search".to_owned(), "summarise".to_owned()];
        let known: Vec<&String> = known.iter().collect();
        let nearest = |name| match entry_key(&known, name) {
            Err(Known::Nearest(nearest)) => nearest.map(String::as_str),
            _ => panic!("{name} is not unknown"),
        };
        assert_eq!(nearest("summarize"), Some("summarise"));
        assert_eq!(nearest("seach"), Some("search"));
        assert_eq!(nearest("translate"), None);
        assert_eq!(nearest("sumarize"), Some("summarise"));
        assert_eq!(nearest("smarze"), None);
        // Up to a third of a long name: 3 edits in 9 letters, not 4.
        assert_eq!(nearest("sommerize"), Some("summarise"));
        assert_eq!(nearest("sommerizy"), None);
    }

    #[test]
    fn an_override_inside_a_keyed_table_of_the_wrong_shape_says_what_it_is_not() {
        // Features as a list and endpoints as a table: an override naming an entry inside
        // says so, rather than reading the list by position or the table by name.
        let e = env_error(
            "name = \"x\"\nfeatures = [{ cooldown = \"1s\" }]",
            "PALISADE_FEATURES__0__COOLDOWN",
            "5s",
        );
        assert_eq!(e.field(), "features");
        assert_eq!(
            e.rule(),
            "(from `PALISADE_FEATURES__0__COOLDOWN`) is not a table, so an environment override \
             cannot set a key inside it"
        );
        let e = env_error(
            "name = \"x\"\n[endpoints.0]\naddress = \"a\"",
            "PALISADE_ENDPOINTS__0__ADDRESS",
            "b",
        );
        assert_eq!(e.field(), "endpoints");
        assert_eq!(
            e.rule(),
            "(from `PALISADE_ENDPOINTS__0__ADDRESS`) is not an array of tables, so an environment \
             override cannot set a key inside it"
        );
    }

    #[test]
    fn rules_on_by_default_are_turned_off_with_off() {
        let config = PresetConfig::from_toml(
            r#"
            name = "llm"
            [attempt_timeout]
            escalate = "off"
            [breaker]
            failure_rate = "off"
            throttle = "off"
            consecutive_failures = 5
            [route]
            panic_ratio = "off"
            outlier = { consecutive_failures = "off", failure_ratio = "off", success_rate_stdev_factor = "off" }
            [[endpoints]]
            address = "a"
            [features.summarise]
            failures_to_turn_off = "off"
            "#,
        )
        .unwrap();
        assert_eq!(config.attempt_timeout.escalate, None);
        assert_eq!(config.breaker.failure_rate, None);
        assert_eq!(config.breaker.throttle, None);
        assert_eq!(config.breaker.consecutive_failures, Some(5));
        let route = config.route.unwrap();
        assert_eq!(route.panic_ratio, None);
        assert_eq!(route.outlier.consecutive_failures, None);
        assert_eq!(route.outlier.failure_ratio, None);
        assert_eq!(route.outlier.success_rate_stdev_factor, None);
        assert_eq!(config.features["summarise"].failures_to_turn_off, None);
        // Leaving a key out keeps the default, which is on.
        let defaults = PresetConfig::from_toml("name = \"llm\"").unwrap();
        assert!(defaults.attempt_timeout.escalate.is_some());
        assert!(defaults.breaker.failure_rate.is_some());
        // Written back, "off" stays off.
        let text = toml::to_string(&config).unwrap();
        assert!(text.contains("failure_rate = \"off\""), "{text}");
        assert_eq!(PresetConfig::from_toml(&text).unwrap(), config);
        // From the environment too.
        let config = PresetConfig::from_toml_with_env(
            "name = \"llm\"",
            [("PALISADE_BREAKER__FAILURE_RATE", "off")],
        )
        .unwrap();
        assert_eq!(config.breaker.failure_rate, None);
        // Any other word is an error that says how to turn a rule off.
        let err =
            PresetConfig::from_toml("name = \"llm\"\n[breaker]\nconsecutive_failures = \"none\"")
                .unwrap_err();
        assert_eq!(err.field(), "breaker.consecutive_failures");
        assert!(err.rule().contains("\"off\""), "{err}");
    }

    #[test]
    fn a_file_with_every_section() {
        let config = PresetConfig::from_toml(
            r#"
            name = "llm"
            deadline = "1m"
            [attempt_timeout]
            limit = "5s"
            escalate = { factor = 1.5, cap = "20s" }
            [retry]
            max_attempts = 4
            backoff = { linear = { initial = "200ms", step = "100ms" } }
            cap = "2s"
            jitter = "full"
            seed = 7
            wait_for_breaker = false
            wait_for_budget = false
            min_attempt_time = "25ms"
            [breaker]
            consecutive_failures = 5
            open_duration = "10s"
            max_open_duration = "1m"
            max_hint = "2m"
            "#,
        )
        .unwrap();
        assert_eq!(config.name, "llm");
        assert_eq!(config.deadline, Duration::from_secs(60));
        assert_eq!(config.attempt_timeout.limit, Duration::from_secs(5));
        assert_eq!(
            config.attempt_timeout.escalate.map(|e| (e.factor, e.cap)),
            Some((1.5, Duration::from_secs(20)))
        );
        assert_eq!(config.retry.max_attempts, 4);
        assert!(!config.retry.wait_for_breaker);
        assert!(RetryConfig::default().wait_for_breaker);
        assert!(!config.retry.wait_for_budget);
        assert_eq!(config.breaker.max_hint, Duration::from_secs(120));
        assert_eq!(config.retry.min_attempt_time, Duration::from_millis(25));
        // A least attempt time as long as the deadline leaves no retry a chance to start.
        let err = PresetConfig::from_toml(
            "name = \"llm\"\ndeadline = \"1s\"\n[retry]\nmin_attempt_time = \"1s\"",
        )
        .unwrap_err();
        assert_eq!(err.field(), "retry.min_attempt_time");
        assert!(
            err.rule().starts_with("must be less than `deadline` (1s)"),
            "{err}"
        );
        // A configuration edited in code is checked by `builder` too, by key path.
        let mut edited = PresetConfig::from_toml("name = \"llm\"").unwrap();
        edited.breaker.half_open_probes = 0;
        let Err(err) = edited.builder() else {
            panic!("a breaker with no probe accepted");
        };
        assert_eq!(err.field(), "breaker.half_open_probes");
        // Without retries it does not matter.
        PresetConfig::from_toml(
            "name = \"llm\"\ndeadline = \"1s\"\n[retry]\nmax_attempts = 1\nmin_attempt_time = \"5s\"",
        )
        .unwrap();
        assert_eq!(
            RetryConfig::default().min_attempt_time,
            Duration::from_millis(10)
        );
        assert!(RetryConfig::default().wait_for_budget);
        assert_eq!(
            config.retry.backoff,
            BackoffConfig::Linear {
                initial: Duration::from_millis(200),
                step: Duration::from_millis(100)
            }
        );
        assert_eq!(config.retry.jitter, JitterConfig::Full);
        assert_eq!(config.retry.seed, Some(7));
        assert_eq!(config.breaker.consecutive_failures, Some(5));
        assert_eq!(config.breaker.open_duration, Duration::from_secs(10));
        // Everything left out keeps the preset's defaults.
        let minimal = PresetConfig::from_toml("name = \"x\"").unwrap();
        assert_eq!(minimal.deadline, Duration::from_secs(30));
        assert_eq!(minimal.attempt_timeout, TimeoutConfig::default());
        assert_eq!(minimal.retry, RetryConfig::default());
        assert_eq!(minimal.breaker, BreakerConfig::default());
        // A round trip through TOML keeps everything.
        let text = toml::to_string(&config).unwrap();
        assert_eq!(PresetConfig::from_toml(&text).unwrap(), config);
    }

    /// A nested table that names some of its keys, in the file or by an override, keeps the
    /// defaults of the others: every key is optional.
    #[test]
    fn a_partial_nested_table_keeps_the_defaults_of_the_keys_it_leaves_out() {
        let defaults = PresetConfig::from_toml("name = \"llm\"").unwrap();
        let rate = defaults.breaker.failure_rate.unwrap();
        let escalation = defaults.attempt_timeout.escalate.unwrap();
        let exponential = |config: &PresetConfig| match config.retry.backoff {
            BackoffConfig::Exponential { initial, factor } => (initial, factor),
            other => panic!("{other:?}"),
        };
        let (initial, factor) = exponential(&defaults);
        // One key inside a default section's table, by an override.
        let config = PresetConfig::from_toml_with_env(
            "name = \"llm\"",
            [
                ("PALISADE_BREAKER__FAILURE_RATE__RATIO", "0.5"),
                ("PALISADE_ATTEMPT_TIMEOUT__ESCALATE__FACTOR", "3.0"),
                ("PALISADE_RETRY__BACKOFF__EXPONENTIAL__FACTOR", "3.0"),
            ],
        )
        .unwrap();
        let r = config.breaker.failure_rate.unwrap();
        assert_eq!((r.ratio, r.min_calls), (0.5, rate.min_calls));
        let e = config.attempt_timeout.escalate.unwrap();
        assert_eq!((e.factor, e.cap), (3.0, escalation.cap));
        assert_eq!(exponential(&config), (initial, 3.0));
        // The same in a file, and a whole table set by an override.
        let config = PresetConfig::from_toml_with_env(
            "name = \"llm\"\n[breaker.failure_rate]\nratio = 0.5\n[attempt_timeout]\n\
             escalate = { cap = \"20s\" }\n[retry]\nbackoff = { exponential = { initial = \"2s\" } }\n\
             [route]\nhealth = { ramp = { steps = { steps = 3 } } }",
            [("PALISADE_BREAKER__SLOW_CALL_RATE", "off")],
        )
        .unwrap();
        let r = config.breaker.failure_rate.unwrap();
        assert_eq!((r.ratio, r.min_calls), (0.5, rate.min_calls));
        let e = config.attempt_timeout.escalate.unwrap();
        assert_eq!(
            (e.factor, e.cap),
            (escalation.factor, Duration::from_secs(20))
        );
        assert_eq!(exponential(&config), (Duration::from_secs(2), factor));
        assert_eq!(
            config.route.unwrap().health.ramp,
            palisade_route::Ramp::Steps {
                steps: 3,
                interval: Duration::from_secs(30)
            }
        );
        let config = PresetConfig::from_toml_with_env(
            "name = \"llm\"",
            [("PALISADE_BREAKER__FAILURE_RATE", "{ ratio = 0.25 }")],
        )
        .unwrap();
        let r = config.breaker.failure_rate.unwrap();
        assert_eq!((r.ratio, r.min_calls), (0.25, rate.min_calls));
        // An empty table is all defaults; a section the file leaves out stays out.
        let config =
            PresetConfig::from_toml("name = \"llm\"\n[breaker.failure_rate]\n[retry.backoff]")
                .unwrap();
        assert_eq!(config, defaults);
        assert_eq!(defaults.route, None);
        // Another kind of backoff than the default has no defaults to keep: serde says what
        // it misses. And a rule turned off stays off.
        let err = PresetConfig::from_toml(
            "name = \"llm\"\n[retry]\nbackoff = { linear = { initial = \"1s\" } }",
        )
        .unwrap_err();
        assert_eq!(err.field(), "retry.backoff.linear");
        assert!(err.rule().contains("missing field `step`"), "{err}");
        let config =
            PresetConfig::from_toml("name = \"llm\"\n[attempt_timeout]\nescalate = \"off\"")
                .unwrap();
        assert_eq!(config.attempt_timeout.escalate, None);
    }

    /// A delay raised alone is not refused for a default cap the file never wrote: the cap
    /// left out yields to it. A cap the file writes is kept, and checked.
    #[test]
    fn a_delay_raised_alone_raises_the_default_cap_it_would_break() {
        let config =
            PresetConfig::from_toml("name = \"llm\"\n[attempt_timeout]\nlimit = \"40s\"").unwrap();
        let e = config.attempt_timeout.escalate.unwrap();
        assert_eq!((e.factor, e.cap), (2.0, Duration::from_secs(40)));
        config.builder().unwrap().build().unwrap();
        let config = PresetConfig::from_toml_with_env(
            "name = \"llm\"",
            [
                ("PALISADE_ATTEMPT_TIMEOUT__LIMIT", "40s"),
                ("PALISADE_ATTEMPT_TIMEOUT__ESCALATE__FACTOR", "3.0"),
            ],
        )
        .unwrap();
        let e = config.attempt_timeout.escalate.unwrap();
        assert_eq!((e.factor, e.cap), (3.0, Duration::from_secs(40)));
        let config = PresetConfig::from_toml(
            "name = \"llm\"\n[retry]\nbackoff = { constant = { delay = \"2m\" } }",
        )
        .unwrap();
        assert_eq!(config.retry.cap, Duration::from_secs(120));
        config.builder().unwrap();
        // A shorter delay keeps the default.
        let config =
            PresetConfig::from_toml("name = \"llm\"\n[attempt_timeout]\nlimit = \"5s\"").unwrap();
        assert_eq!(
            config.attempt_timeout.escalate.unwrap().cap,
            Duration::from_secs(30)
        );
        // A cap the file writes is the file's: too short, it is refused.
        let err = PresetConfig::from_toml_with_env(
            "name = \"llm\"\n[attempt_timeout]\nescalate = { factor = 2.0, cap = \"30s\" }",
            [("PALISADE_ATTEMPT_TIMEOUT__LIMIT", "40s")],
        )
        .unwrap_err();
        assert_eq!(err.field(), "attempt_timeout.escalate.cap");
        let err = PresetConfig::from_toml(
            "name = \"llm\"\n[retry]\ncap = \"1m\"\nbackoff = { constant = { delay = \"2m\" } }",
        )
        .unwrap_err();
        assert_eq!(err.field(), "retry.cap");
    }

    /// The breaker's open period raised alone (in the file or by a variable) raises the
    /// default `max_open_duration` (750 ms) it would break, as the other caps left out do; a
    /// `max_open_duration` the file writes is kept, and checked.
    #[test]
    fn an_open_duration_raised_alone_raises_the_default_max_open_duration() {
        let config =
            PresetConfig::from_toml("name = \"llm\"\n[breaker]\nopen_duration = \"5s\"").unwrap();
        assert_eq!(config.breaker.open_duration, Duration::from_secs(5));
        assert_eq!(config.breaker.max_open_duration, Duration::from_secs(5));
        config.builder().unwrap().build().unwrap();
        let config = PresetConfig::from_toml_with_env(
            "name = \"llm\"",
            [("PALISADE_BREAKER__OPEN_DURATION", "10s")],
        )
        .unwrap();
        assert_eq!(config.breaker.max_open_duration, Duration::from_secs(10));
        // A shorter period keeps the default.
        let config =
            PresetConfig::from_toml("name = \"llm\"\n[breaker]\nopen_duration = \"100ms\"")
                .unwrap();
        assert_eq!(
            config.breaker.max_open_duration,
            BreakerConfig::default().max_open_duration
        );
        // A cap the file writes is the file's: too short, it is refused.
        let err = PresetConfig::from_toml_with_env(
            "name = \"llm\"\n[breaker]\nmax_open_duration = \"1s\"",
            [("PALISADE_BREAKER__OPEN_DURATION", "5s")],
        )
        .unwrap_err();
        assert_eq!(err.field(), "breaker.max_open_duration");
    }

    /// The router's two caps yield as the others do: a cool-down after a rate limit or a
    /// base ejection raised alone (in the file or by a variable) raises the default
    /// `max_cooldown` (60 s) or `outlier.max_ejection` (300 s) it would break, instead of the
    /// file being refused for a cap it never wrote. A cap the file writes is kept, and checked.
    #[test]
    fn the_routers_delays_raised_alone_raise_the_default_caps_they_would_break() {
        let config = PresetConfig::from_toml("name = \"llm\"\n[route]\ncooldown = \"2m\"").unwrap();
        let route = config.route.unwrap();
        assert_eq!(route.cooldown, Duration::from_secs(120));
        assert_eq!(route.max_cooldown, Duration::from_secs(120));
        let config = PresetConfig::from_toml(
            "name = \"llm\"\n[route]\noutlier = { base_ejection = \"10m\" }",
        )
        .unwrap();
        let outlier = config.route.unwrap().outlier;
        assert_eq!(outlier.base_ejection, Duration::from_secs(600));
        assert_eq!(outlier.max_ejection, Duration::from_secs(600));
        let config = PresetConfig::from_toml_with_env(
            "name = \"llm\"\n[[endpoints]]\naddress = \"a\"",
            [
                ("PALISADE_ROUTE__COOLDOWN", "90s"),
                ("PALISADE_ROUTE__OUTLIER__BASE_EJECTION", "6m"),
            ],
        )
        .unwrap();
        let route = config.route.unwrap();
        assert_eq!(route.max_cooldown, Duration::from_secs(90));
        assert_eq!(route.outlier.max_ejection, Duration::from_secs(360));
        config.route(|_| ()).unwrap().unwrap();
        // Shorter delays keep the defaults.
        let config = PresetConfig::from_toml(
            "name = \"llm\"\n[route]\ncooldown = \"5s\"\noutlier = { base_ejection = \"1m\" }",
        )
        .unwrap();
        let (route, defaults) = (config.route.unwrap(), RouteConfig::default());
        assert_eq!(route.max_cooldown, defaults.max_cooldown);
        assert_eq!(route.outlier.max_ejection, defaults.outlier.max_ejection);
        // A cap the file writes is the file's: too short, it is refused.
        let err = PresetConfig::from_toml_with_env(
            "name = \"llm\"\n[route]\nmax_cooldown = \"1m\"",
            [("PALISADE_ROUTE__COOLDOWN", "2m")],
        )
        .unwrap_err();
        assert_eq!(err.field(), "route.max_cooldown");
        let err = PresetConfig::from_toml(
            "name = \"llm\"\n[route.outlier]\nbase_ejection = \"10m\"\nmax_ejection = \"5m\"",
        )
        .unwrap_err();
        assert_eq!(err.field(), "route.outlier.max_ejection");
    }

    /// A file that leaves the retry settings out builds the retry layer `preset::recommended`
    /// builds: the same backoff, its cap included (the retry layer's `DEFAULT_CAP`).
    #[test]
    fn a_file_with_only_a_name_builds_the_recommended_stack() {
        assert_eq!(RetryConfig::default().cap, palisade_retry::DEFAULT_CAP);
        // The stacks' Debug, apart from the jitter's seeds (from the operating system).
        let unseeded = |debug: String| {
            debug
                .lines()
                .filter(|line| !line.trim_start().starts_with("seed"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let recommended = format!("{:#?}", preset::recommended("llm").build().unwrap());
        let from_file = format!(
            "{:#?}",
            PresetConfig::from_toml("name = \"llm\"")
                .unwrap()
                .builder()
                .unwrap()
                .build()
                .unwrap()
        );
        assert!(recommended.contains("cap"), "{recommended}");
        assert_eq!(unseeded(from_file), unseeded(recommended));
    }

    #[test]
    fn errors_name_the_key_path_and_the_rule() {
        let field = |text: &str| {
            let e = PresetConfig::from_toml(text).unwrap_err();
            (e.field().to_owned(), e.rule().to_owned())
        };
        let (f, r) = field("deadline = \"1s\"");
        assert_eq!(f, "(file)");
        assert!(r.contains("missing field `name`"), "{r}");
        let (f, r) = field("name = \"x\"\nsurprise = 1");
        assert_eq!(f, "surprise");
        assert!(r.contains("unknown field `surprise`"), "{r}");
        assert_eq!(
            field("name = \"x\"\n[breaker]\nopen_duration = \"soon\"").0,
            "breaker.open_duration"
        );
        assert_eq!(
            field("name = \"x\"\n[retry]\nmax_attempts = 0").0,
            "retry.max_attempts"
        );
        assert_eq!(
            field("name = \"x\"\n[attempt_timeout]\nlimit = \"0s\"").0,
            "attempt_timeout.limit"
        );
        assert_eq!(
            field("name = \"x\"\n[attempt_timeout]\nescalate = { factor = 0.5, cap = \"1m\" }").0,
            "attempt_timeout.escalate.factor"
        );
        assert_eq!(field("name = \"x\"\ndeadline = \"0s\"").0, "deadline");
        assert_eq!(
            field("name = \"x\"\n[breaker]\nfailure_rate = { ratio = 2.0, min_calls = 5 }").0,
            "breaker.failure_rate.ratio"
        );
        assert_eq!(
            field("name = \"x\"\n[retry]\njitter = { proportional = 1.5 }"),
            (
                "retry.jitter.proportional".to_owned(),
                "must be a proportional factor between 0.0 and 1.0".to_owned()
            )
        );
        let (f, r) = field("name = [");
        assert_eq!(f, "(file)");
        assert!(r.starts_with("is not valid TOML"), "{r}");
    }

    /// Every key with a rule, set to a value that breaks it in a file: the error's field is
    /// the key's path in the file, whatever the layer calls it (the retry layer's
    /// `backoff.cap` is the file's `retry.cap`, the breaker's `window.calls` its
    /// `breaker.window.recent.calls`, the router's `health.ramp.steps` its
    /// `route.health.ramp.steps.steps`).
    #[test]
    fn every_rule_broken_in_a_file_names_the_files_key_path() {
        let cases: &[(&str, &str)] = &[
            ("name = \"\"", "name"),
            ("name = \" \\t \"", "name"),
            ("deadline = \"0s\"", "deadline"),
            ("[attempt_timeout]\nlimit = \"0s\"", "attempt_timeout.limit"),
            (
                "[attempt_timeout]\nescalate = { factor = 0.5, cap = \"1m\" }",
                "attempt_timeout.escalate.factor",
            ),
            (
                "[attempt_timeout]\nlimit = \"10s\"\nescalate = { factor = 2.0, cap = \"1s\" }",
                "attempt_timeout.escalate.cap",
            ),
            ("[retry]\nmax_attempts = 0", "retry.max_attempts"),
            ("[retry]\ncap = \"0s\"", "retry.cap"),
            (
                "[retry]\ncap = \"30s\"\nbackoff = { constant = { delay = \"1m\" } }",
                "retry.cap",
            ),
            (
                "[retry]\ncap = \"30s\"\nbackoff = { linear = { initial = \"1m\", step = \"1s\" } }",
                "retry.cap",
            ),
            (
                "[retry]\nbackoff = { exponential = { initial = \"1s\", factor = 0.5 } }",
                "retry.backoff.exponential.factor",
            ),
            (
                "[retry]\njitter = { proportional = -0.1 }",
                "retry.jitter.proportional",
            ),
            ("[retry.budget]\nratio = -1.0", "retry.budget.ratio"),
            ("[retry.budget]\nttl = \"0s\"", "retry.budget.ttl"),
            ("[retry.budget]\nmax_tokens = 0", "retry.budget.max_tokens"),
            (
                "[retry.budget]\ntoken_ratio = 0.0",
                "retry.budget.token_ratio",
            ),
            (
                "[breaker]\nconsecutive_failures = 0",
                "breaker.consecutive_failures",
            ),
            ("[breaker]\nwindow = { count = 0 }", "breaker.window.count"),
            (
                "[breaker]\nwindow = { recent = { calls = 0, within = \"1s\", min_calls = 1 } }",
                "breaker.window.recent.calls",
            ),
            (
                "[breaker]\nwindow = { recent = { calls = 30, within = \"0s\", min_calls = 1 } }",
                "breaker.window.recent.within",
            ),
            (
                "[breaker]\nwindow = { recent = { calls = 30, within = \"1s\", min_calls = 31 } }",
                "breaker.window.recent.min_calls",
            ),
            (
                "[breaker]\nwindow = { time = { span = \"10s\", buckets = 0 } }",
                "breaker.window.time.buckets",
            ),
            (
                "[breaker]\nwindow = { time = { span = \"5ms\", buckets = 10 } }",
                "breaker.window.time.span",
            ),
            (
                "[breaker]\nfailure_rate = { ratio = 0.0, min_calls = 5 }",
                "breaker.failure_rate.ratio",
            ),
            (
                "[breaker]\nfailure_rate = { ratio = 0.5, min_calls = 0 }",
                "breaker.failure_rate.min_calls",
            ),
            (
                "[breaker]\nslow_call_duration = \"1s\"\nslow_call_rate = { ratio = 2.0, min_calls = 5 }",
                "breaker.slow_call_rate.ratio",
            ),
            (
                "[breaker]\nslow_call_duration = \"1s\"\nslow_call_rate = { ratio = 0.5, min_calls = 0 }",
                "breaker.slow_call_rate.min_calls",
            ),
            (
                "[breaker]\nslow_call_duration = \"0s\"",
                "breaker.slow_call_duration",
            ),
            ("[breaker]\nopen_duration = \"0s\"", "breaker.open_duration"),
            ("[breaker]\nopen_backoff = 0.5", "breaker.open_backoff"),
            (
                "[breaker]\nopen_duration = \"10s\"\nmax_open_duration = \"1s\"",
                "breaker.max_open_duration",
            ),
            ("[breaker]\njitter_ratio = 1.0", "breaker.jitter_ratio"),
            (
                "[breaker]\nhalf_open_probes = 0",
                "breaker.half_open_probes",
            ),
            (
                "[breaker]\nsuccess_threshold = 0",
                "breaker.success_threshold",
            ),
            ("[breaker]\nprobe_timeout = \"0s\"", "breaker.probe_timeout"),
            (
                "[breaker]\nthrottle = { k = 0.5, window = 100 }",
                "breaker.throttle.k",
            ),
            (
                "[breaker]\nthrottle = { k = 2.0, window = 0 }",
                "breaker.throttle.window",
            ),
            ("[route]\npanic_ratio = 0.0", "route.panic_ratio"),
            ("[route]\noverprovisioning = 0.5", "route.overprovisioning"),
            ("[route]\ntrend_window = \"1ms\"", "route.trend_window"),
            (
                "[route]\ncooldown = \"10s\"\nmax_cooldown = \"1s\"",
                "route.max_cooldown",
            ),
            (
                "[route]\noutlier = { consecutive_failures = 0 }",
                "route.outlier.consecutive_failures",
            ),
            (
                "[route]\noutlier = { base_ejection = \"0s\" }",
                "route.outlier.base_ejection",
            ),
            (
                "[route]\noutlier = { base_ejection = \"1m\", max_ejection = \"1s\" }",
                "route.outlier.max_ejection",
            ),
            (
                "[route]\noutlier = { max_ejection_ratio = 2.0 }",
                "route.outlier.max_ejection_ratio",
            ),
            (
                "[route]\noutlier = { failure_ratio = 0.0 }",
                "route.outlier.failure_ratio",
            ),
            (
                "[route]\noutlier = { success_rate_stdev_factor = 0.0 }",
                "route.outlier.success_rate_stdev_factor",
            ),
            (
                "[route]\noutlier = { min_hosts = 0 }",
                "route.outlier.min_hosts",
            ),
            (
                "[route]\noutlier = { request_volume = 0 }",
                "route.outlier.request_volume",
            ),
            (
                "[route]\nhealth = { degraded_after = 0 }",
                "route.health.degraded_after",
            ),
            (
                "[route]\nhealth = { degraded_after = 5, failed_after = 2 }",
                "route.health.failed_after",
            ),
            (
                "[route]\nhealth = { min_healthy_checks = 0 }",
                "route.health.min_healthy_checks",
            ),
            (
                "[route]\nhealth = { degraded_ratio = 2.0 }",
                "route.health.degraded_ratio",
            ),
            (
                "[route]\nhealth = { ramp = { steps = { steps = 0, interval = \"30s\" } } }",
                "route.health.ramp.steps.steps",
            ),
            (
                "[route]\nhealth = { ramp = { steps = { steps = 5, interval = \"0s\" } } }",
                "route.health.ramp.steps.interval",
            ),
            (
                "[route]\nhealth = { ramp = { linear = { window = \"0s\", min_ratio = 0.1, aggression = 1.0 } } }",
                "route.health.ramp.linear.window",
            ),
            (
                "[route]\nhealth = { ramp = { linear = { window = \"1m\", min_ratio = 2.0, aggression = 1.0 } } }",
                "route.health.ramp.linear.min_ratio",
            ),
            (
                "[route]\nhealth = { ramp = { linear = { window = \"1m\", min_ratio = 0.1, aggression = 0.0 } } }",
                "route.health.ramp.linear.aggression",
            ),
            ("[[endpoints]]\naddress = \" \"", "endpoints[0].address"),
            (
                "[features.search]\nfailures_to_turn_off = 0",
                "features.search.failures_to_turn_off",
            ),
            (
                "[features.search]\nwindow = \"0s\"",
                "features.search.window",
            ),
            (
                "[features.search]\ncooldown = \"0s\"",
                "features.search.cooldown",
            ),
            (
                "[features.search]\nprobe_timeout = \"0s\"",
                "features.search.probe_timeout",
            ),
        ];
        for (body, key) in cases {
            // `name` first, unless the case is about it.
            let text = if key == &"name" {
                (*body).to_owned()
            } else {
                format!("name = \"llm\"\n{body}")
            };
            let err =
                PresetConfig::from_toml(&text).expect_err(&format!("{key} is refused: {text}"));
            assert_eq!(err.field(), *key, "{text}: {err}");
        }
    }

    #[test]
    fn serdes_rust_type_names_read_as_a_files_words() {
        assert_eq!(
            in_file_words("invalid type: integer `3`, expected struct RetryConfig\n"),
            "invalid type: integer `3`, expected a table of settings"
        );
        assert_eq!(
            in_file_words("expected struct Rate_2 here"),
            "expected a table of settings here"
        );
        assert_eq!(
            in_file_words("unknown field `x`, expected `a`"),
            "unknown field `x`, expected `a`"
        );
        let err = PresetConfig::from_toml("name = \"llm\"\nretry = 3").unwrap_err();
        assert_eq!(
            (err.field(), err.rule()),
            (
                "retry",
                "invalid type: integer `3`, expected a table of settings"
            )
        );
    }

    /// A value of the wrong shape for a key that takes one of a few (a kind of backoff, of
    /// window or ramp, a word or a table, a table or `"off"`) names the key and says what it
    /// takes, as TOML writes it: serde's message spoke of Rust's enums ("invalid type: unit
    /// variant, expected newtype variant", "expected string only") or Rust's types (`u32`,
    /// `f64`, `struct variant BackoffConfig::Exponential`, `map`).
    #[test]
    fn a_value_of_the_wrong_shape_says_what_the_key_takes_in_a_files_words() {
        let cases: &[(&str, &[&str], &str)] = &[
            (
                "retry.backoff",
                &[
                    "\"exponential\"",
                    "5",
                    "true",
                    "[]",
                    "{ exponential = 5 }",
                    "{ constant = \"1s\" }",
                    "{ exponentail = { initial = \"1s\" } }",
                    "{ constant = { delay = \"1s\" }, linear = { initial = \"1s\", step = \"1s\" } }",
                ],
                "`{ exponential = { initial = \"1s\", factor = 2.0 } }`",
            ),
            (
                "retry.jitter",
                &[
                    "\"proportional\"",
                    "\"maybe\"",
                    "0.1",
                    "true",
                    "{ full = true }",
                    "{ propotional = 0.1 }",
                ],
                "`{ proportional = 0.1 }`",
            ),
            (
                "attempt_timeout.escalate",
                &["5", "true", "[1]", "\"on\""],
                "`{ factor = 2.0, cap = \"30s\" }`",
            ),
            (
                "breaker.failure_rate",
                &["\"maybe\"", "0.5", "true"],
                "`{ ratio = 0.5, min_calls = 20 }`",
            ),
            (
                "breaker.window",
                &["\"count\"", "5", "{ time = 5 }", "{ counts = 5 }"],
                "`{ count = 100 }`",
            ),
            (
                "breaker.cancel",
                &["\"later\"", "5"],
                "`{ failure_after = \"5s\" }`",
            ),
            (
                "route.health.ramp",
                &["\"steps\"", "5", "{ steps = 5 }"],
                "`{ steps = { steps = 5, interval = \"30s\" } }`",
            ),
        ];
        let rust = [
            "variant",
            "string only",
            "wanted",
            "struct",
            "u32",
            "f64",
            "map",
            "sequence",
            "::",
        ];
        for (key, values, form) in cases {
            for value in *values {
                let text = format!("name = \"llm\"\n{key} = {value}");
                let err = PresetConfig::from_toml(&text).unwrap_err();
                assert_eq!(err.field(), *key, "{text}: {err}");
                assert!(err.rule().contains(form), "{text}: {err}");
                for word in rust {
                    assert!(!err.rule().contains(word), "{text}: {err}");
                }
            }
        }
        let err = PresetConfig::from_toml("name = \"llm\"\n[retry]\nbackoff = \"exponential\"")
            .unwrap_err();
        assert_eq!(
            err.rule(),
            "invalid value: string \"exponential\", expected a table naming one kind of backoff: \
             `{ constant = { delay = \"1s\" } }`, `{ linear = { initial = \"1s\", step = \"1s\" } }` \
             or `{ exponential = { initial = \"1s\", factor = 2.0 } }`"
        );
        // The value is quoted up to 60 characters as TOML writes it (quotes included), and
        // named by its kind alone when longer or on several lines.
        let quoted = |value: &str| {
            let text = format!("name = \"llm\"\n[retry]\njitter = {value}");
            PresetConfig::from_toml(&text)
                .unwrap_err()
                .rule()
                .to_owned()
        };
        let sixty = format!("\"{}\"", "x".repeat(58));
        assert!(quoted(&sixty).starts_with(&format!("invalid value: string {sixty}, expected")));
        let longer = format!("\"{}\"", "x".repeat(59));
        assert!(quoted(&longer).starts_with("invalid value: string, expected"));
        assert!(quoted("\"\"\"a\nb\"\"\"").starts_with("invalid value: string, expected"));
        assert!(quoted("5").starts_with("invalid value: integer `5`, expected"));
        let err = env_error("name = \"llm\"", "PALISADE_RETRY__JITTER", "proportional");
        assert_eq!(
            (err.field(), err.rule()),
            (
                "retry.jitter",
                "(from `PALISADE_RETRY__JITTER`) invalid value: string \"proportional\", expected \
                 `\"none\"`, `\"full\"`, `\"equal\"`, `\"decorrelated\"`, or \
                 `{ proportional = 0.1 }` (a fraction of the delay, 0 to 1)"
            )
        );
        // Numbers, booleans, arrays and tables are named as TOML names them.
        let cases = [
            (
                "[retry]\nmax_attempts = \"3\"",
                "retry.max_attempts",
                "invalid type: string \"3\", expected a whole number, at least 0",
            ),
            (
                "[retry]\njitter = { proportional = \"x\" }",
                "retry.jitter.proportional",
                "invalid type: string \"x\", expected a number",
            ),
            (
                "[retry]\nwait_for_budget = \"yes\"",
                "retry.wait_for_budget",
                "invalid type: string \"yes\", expected true or false",
            ),
            (
                "[[endpoints]]\naddress = \"a\"\ntier = 300",
                "endpoints[0].tier",
                "invalid value: integer `300`, expected a whole number from 0 to 255",
            ),
            (
                "endpoints = 5",
                "endpoints",
                "invalid type: integer `5`, expected an array",
            ),
            (
                "deadline = { secs = 5 }",
                "deadline",
                "invalid type: table, expected a duration such as",
            ),
            (
                "[breaker]\nwindow = { count = \"x\" }",
                "breaker.window.count",
                "invalid type: string \"x\", expected a whole number, at least 0",
            ),
        ];
        for (body, field, starts) in cases {
            let text = format!("name = \"llm\"\n{body}");
            let err = PresetConfig::from_toml(&text).unwrap_err();
            assert_eq!(err.field(), field, "{text}: {err}");
            assert!(err.rule().starts_with(starts), "{text}: {err}");
        }
    }

    /// Every form an error offers for a key of a few shapes is one the key takes.
    #[test]
    fn every_form_a_shape_error_offers_is_read() {
        for (key, forms) in SHAPES {
            let offered: Vec<&str> = forms.split('`').skip(1).step_by(2).collect();
            assert!(offered.len() >= 2, "{key}: {forms}");
            for form in offered {
                let text =
                    format!("name = \"llm\"\nbreaker.slow_call_duration = \"1s\"\n{key} = {form}");
                PresetConfig::from_toml(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            }
        }
    }

    /// The error mappers leave alone what is already the file's key path, and what they do
    /// not know.
    #[test]
    fn the_key_path_mappers_leave_other_fields_alone() {
        let retry = RetryConfig::default();
        let e = |field: &'static str| ConfigError::new(field, "rule");
        assert_eq!(
            retry_error(e("max_attempts"), &retry).field(),
            "retry.max_attempts"
        );
        let constant = RetryConfig {
            backoff: BackoffConfig::Constant {
                delay: Duration::from_secs(1),
            },
            jitter: JitterConfig::Full,
            ..retry
        };
        // Only an exponential backoff has a factor, only a proportional jitter a fraction.
        assert_eq!(
            retry_error(e("backoff.factor"), &constant).field(),
            "retry.backoff.factor"
        );
        assert_eq!(retry_error(e("jitter"), &constant).field(), "retry.jitter");
        assert_eq!(retry_error(e("backoff.cap"), &constant).rule(), "rule");
        let breaker = BreakerConfig::default();
        assert_eq!(
            breaker_error(e("window.recent.calls"), &breaker).field(),
            "breaker.window.recent.calls"
        );
        assert_eq!(
            breaker_error(e("window.recent"), &breaker).field(),
            "breaker.window.recent"
        );
        assert_eq!(
            breaker_error(e("windows"), &breaker).field(),
            "breaker.windows"
        );
        assert_eq!(breaker_error(e("window"), &breaker).rule(), "rule");
        let route = RouteConfig::default();
        assert_eq!(
            route_error(e("health.ramp.steps.steps"), &route).field(),
            "route.health.ramp.steps.steps"
        );
        assert_eq!(
            route_error(e("panic_ratio"), &route).field(),
            "route.panic_ratio"
        );
        assert_eq!(route_error(e("health.ramp.steps"), &route).rule(), "rule");
    }

    /// A value that turns a rule off in Rust (`None`) is `"off"` in a file: the messages say
    /// both.
    #[test]
    fn rules_that_turn_off_say_how_in_a_file_too() {
        let rule = |body: &str| {
            PresetConfig::from_toml(&format!("name = \"llm\"\n{body}"))
                .unwrap_err()
                .rule()
                .to_owned()
        };
        assert_eq!(
            rule("[route]\npanic_ratio = 0.0"),
            "must be greater than 0 and at most 1 (None, \"off\" in a configuration file, turns panic mode off)"
        );
        assert_eq!(
            rule("[route]\noutlier = { consecutive_failures = 0 }"),
            "must be at least 1 (None, \"off\" in a configuration file, turns the rule off)"
        );
        assert_eq!(
            rule("[features.search]\nfailures_to_turn_off = 0"),
            "must be at least 1 (None, \"off\" in a configuration file, turns the rule off: the feature never turns itself off)"
        );
        // And "off" does turn them off.
        let config = PresetConfig::from_toml(
            "name = \"llm\"\n[route]\npanic_ratio = \"off\"\n[features.search]\nfailures_to_turn_off = \"off\"",
        )
        .unwrap();
        assert_eq!(config.route.unwrap().panic_ratio, None);
        assert_eq!(config.features["search"].failures_to_turn_off, None);
    }

    /// A word that is almost `"off"` reads as one line, in a file's words.
    #[test]
    fn a_typo_of_off_says_what_is_expected_in_one_line() {
        let err = PresetConfig::from_toml("name = \"llm\"\n[attempt_timeout]\nescalate = \"of\"")
            .unwrap_err();
        assert_eq!(err.field(), "attempt_timeout.escalate");
        assert_eq!(
            err.rule(),
            "invalid value: string \"of\", expected a table `{ factor = 2.0, cap = \"30s\" }`, or \
             `\"off\"` for a fixed limit"
        );
        assert_eq!(
            err.to_string(),
            "invalid configuration: `attempt_timeout.escalate` invalid value: string \"of\", \
             expected a table `{ factor = 2.0, cap = \"30s\" }`, or `\"off\"` for a fixed limit"
        );
    }

    /// An empty or blank name is refused, by the file and by `validate`.
    #[test]
    fn an_empty_name_is_refused() {
        for name in ["", "   ", "\\t"] {
            let err = PresetConfig::from_toml(&format!("name = \"{name}\"")).unwrap_err();
            assert_eq!(err.field(), "name", "{name:?}");
            assert!(err.rule().starts_with("must not be empty"), "{err}");
        }
        let mut config = PresetConfig::from_toml("name = \"llm\"").unwrap();
        config.name = " ".to_owned();
        assert_eq!(config.validate().unwrap_err().field(), "name");
        assert_eq!(config.build_with_handle().unwrap_err().field(), "name");
        assert_eq!(
            config.builder().unwrap().build().unwrap_err().field(),
            "name"
        );
        // The environment cannot blank it either.
        let err = PresetConfig::from_toml_with_env("name = \"llm\"", [("PALISADE_NAME", "\"\"")])
            .unwrap_err();
        assert_eq!(err.field(), "name");
        assert_eq!(
            err.rule(),
            "(from `PALISADE_NAME`) must not be empty or only whitespace: it names the dependency \
             in errors, metrics and spans"
        );
    }

    /// Every error about what an override set names the variable as well as the key path.
    #[test]
    fn an_override_error_names_the_variable() {
        let cases = [
            (
                "PALISADE_BREAKER__OPEN_DURATON",
                "5s",
                "breaker.open_duraton",
                "(from `PALISADE_BREAKER__OPEN_DURATON`) unknown field `open_duraton`",
            ),
            (
                "PALISADE_RETRY",
                "3",
                "retry",
                "(from `PALISADE_RETRY`) invalid type: integer `3`, expected a table of settings",
            ),
            (
                "PALISADE_RETRY__TRIES",
                "3",
                "retry.tries",
                "(from `PALISADE_RETRY__TRIES`) unknown field `tries`",
            ),
            (
                "PALISADE_SURPRISE",
                "1",
                "surprise",
                "(from `PALISADE_SURPRISE`) unknown field `surprise`",
            ),
            (
                "PALISADE_RETRY__MAX_ATTEMPTS",
                "0",
                "retry.max_attempts",
                "(from `PALISADE_RETRY__MAX_ATTEMPTS`) must be at least 1",
            ),
            (
                "PALISADE_BREAKER__FAILURE_RATE",
                "{ ratio = 0.5, min_calls = \"many\" }",
                "breaker.failure_rate.min_calls",
                "(from `PALISADE_BREAKER__FAILURE_RATE`) invalid type: string \"many\"",
            ),
            (
                "PALISADE_BREAKER",
                "{ open_duration = \"0s\" }",
                "breaker.open_duration",
                "(from `PALISADE_BREAKER`) must be at least one millisecond",
            ),
            (
                "PALISADE_NAME__X",
                "3",
                "name",
                "(from `PALISADE_NAME__X`) is not a table",
            ),
            (
                "PALISADE_FEATURES__SEARCH__WINDOW",
                "\"0s\"",
                "features.search.window",
                "(from `PALISADE_FEATURES__SEARCH__WINDOW`) must be at least 10 ns",
            ),
            (
                "PALISADE_FEATURES__SEARCH__WINDOWS",
                "1",
                "features.search.windows",
                "(from `PALISADE_FEATURES__SEARCH__WINDOWS`) unknown field `windows`",
            ),
        ];
        let file = "name = \"llm\"\n[features.search]\nwindow = \"1m\"";
        for (var, value, field, starts) in cases {
            let err = env_error(file, var, value);
            assert_eq!(err.field(), field, "{var}: {err}");
            assert!(err.rule().starts_with(starts), "{var}: {err}");
        }
        // A variable that names no key says so, naming it.
        for var in [
            "PALISADE_",
            "PALISADE_RETRY__",
            "PALISADE_RETRY____CAP",
            "PALISADE___X",
        ] {
            let err = env_error(file, var, "x");
            assert_eq!(err.field(), "(environment)", "{var}");
            assert_eq!(
                err.rule(),
                format!(
                    "has a variable naming no key, `{var}`: a variable is `PALISADE_` followed by \
                     the key's path, its levels joined by `__` (`PALISADE_RETRY__MAX_ATTEMPTS`)"
                )
            );
        }
        // An error the file made names no variable, even with overrides about.
        let err = PresetConfig::from_toml_with_env(
            "name = \"llm\"\n[retry]\nmax_attempts = 0",
            [("PALISADE_DEADLINE", "5s"), ("PALISADE_RETRY__CAP", "10s")],
        )
        .unwrap_err();
        assert_eq!(
            (err.field(), err.rule()),
            ("retry.max_attempts", "must be at least 1")
        );
        // The error names the variable whose value won: the deepest, which applies last.
        let err = PresetConfig::from_toml_with_env(
            "name = \"llm\"",
            [
                ("PALISADE_RETRY__MAX_ATTEMPTS", "0"),
                ("PALISADE_RETRY", "{ max_attempts = 5 }"),
            ],
        )
        .unwrap_err();
        assert!(
            err.rule()
                .starts_with("(from `PALISADE_RETRY__MAX_ATTEMPTS`) "),
            "{err}"
        );
        // Whatever the order of the environment: the whole table first, then its key.
        for vars in [
            [
                ("PALISADE_RETRY__MAX_ATTEMPTS", "5"),
                ("PALISADE_RETRY", "{ max_attempts = 0, cap = \"1s\" }"),
            ],
            [
                ("PALISADE_RETRY", "{ max_attempts = 0, cap = \"1s\" }"),
                ("PALISADE_RETRY__MAX_ATTEMPTS", "5"),
            ],
        ] {
            let config = PresetConfig::from_toml_with_env("name = \"llm\"", vars)
                .unwrap_or_else(|e| panic!("{vars:?}: {e}"));
            assert_eq!(
                (config.retry.max_attempts, config.retry.cap),
                (5, Duration::from_secs(1)),
                "{vars:?}"
            );
        }
        // A keyed table's entry set by a whole-table variable can be changed by a deeper one
        // named before it.
        let config = PresetConfig::from_toml_with_env(
            "name = \"llm\"",
            [
                ("PALISADE_FEATURES__NEW__COOLDOWN", "9s"),
                ("PALISADE_FEATURES", "{ new = { cooldown = \"1s\" } }"),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.features["new"].cooldown, Duration::from_secs(9));
        // An error that names its variable already is kept as it is.
        let err = env_error(file, "PALISADE_FEATURES__SEARC__WINDOW", "1");
        assert!(
            err.rule()
                .starts_with("is not defined: `PALISADE_FEATURES__SEARC__WINDOW` names"),
            "{err}"
        );
    }

    /// An override inside a keyed table is recorded by the path errors spell (`endpoints[1]`,
    /// the file's `web-search`), and an error about a table an override made of a value
    /// (`deadline` from `PALISADE_DEADLINE__SECS`) names it too.
    #[test]
    fn an_override_error_names_the_variable_whatever_the_paths_spelling() {
        let file = "name = \"llm\"\n[[endpoints]]\naddress = \"east\"\n[[endpoints]]\n\
                    address = \"west\"\n[features.web-search]\ncooldown = \"30s\"";
        let cases = [
            (
                "PALISADE_ENDPOINTS__1__TIER",
                "high",
                "endpoints[1].tier",
                "(from `PALISADE_ENDPOINTS__1__TIER`) invalid type: string \"high\"",
            ),
            (
                "PALISADE_ENDPOINTS__0__ADDRESS",
                "\" \"",
                "endpoints[0].address",
                "(from `PALISADE_ENDPOINTS__0__ADDRESS`) must not be empty",
            ),
            (
                "PALISADE_ENDPOINTS__0__ADRESS",
                "a",
                "endpoints[0].adress",
                "(from `PALISADE_ENDPOINTS__0__ADRESS`) unknown field `adress`",
            ),
            (
                "PALISADE_FEATURES__WEB_SEARCH__COOLDOWN",
                "soon",
                "features.web-search.cooldown",
                "(from `PALISADE_FEATURES__WEB_SEARCH__COOLDOWN`) ",
            ),
            (
                "PALISADE_FEATURES__WEB_SEARCH__COOLDOWN",
                "0s",
                "features.web-search.cooldown",
                "(from `PALISADE_FEATURES__WEB_SEARCH__COOLDOWN`) must be",
            ),
            (
                "PALISADE_DEADLINE__SECS",
                "5",
                "deadline",
                "(from `PALISADE_DEADLINE__SECS`) invalid type: table",
            ),
            (
                "PALISADE_RETRY__BUDGET__RATIO__X",
                "5",
                "retry.budget.ratio",
                "(from `PALISADE_RETRY__BUDGET__RATIO__X`) invalid type: table",
            ),
        ];
        for (var, value, field, starts) in cases {
            let err = env_error(file, var, value);
            assert_eq!(err.field(), field, "{var}: {err}");
            assert!(err.rule().starts_with(starts), "{var}: {err}");
        }
        // What the file got wrong in a table an override changed is still the file's.
        let err = PresetConfig::from_toml_with_env(
            "name = \"llm\"\n[[endpoints]]\naddress = \" \"",
            [("PALISADE_ENDPOINTS__0__TIER", "1")],
        )
        .unwrap_err();
        assert_eq!(
            (err.field(), err.rule()),
            ("endpoints[0].address", "must not be empty")
        );
    }

    /// A file that is not TOML says where, by line and column.
    #[test]
    fn a_syntax_error_says_its_line_and_column() {
        let rule = |text: &str| {
            let err = PresetConfig::from_toml(text).unwrap_err();
            assert_eq!(err.field(), "(file)", "{err}");
            err.rule().to_owned()
        };
        let r = rule("name = \"llm\"\ndeadline = \"30s\"\n[retry]\nmax_attempts = 3\ncap = 30s\n");
        assert!(
            r.starts_with("is not valid TOML at line 5, column 7 (`30s`): "),
            "{r}"
        );
        let r = rule("name = \"llm\"\n[retry]\nmax_attempts = 3\nmax_attempts = 4\n");
        assert_eq!(
            r,
            "is not valid TOML at line 4, column 1 (`max_attempts`): duplicate key"
        );
        // Columns count characters, not bytes; an empty span says no more than where.
        let r = rule("name = \"ünï\" x");
        assert!(
            r.starts_with("is not valid TOML at line 1, column 14: "),
            "{r}"
        );
        // A piece of up to 40 characters is quoted; a longer one is not.
        let (forty, longer) = ("a".repeat(40), "a".repeat(41));
        let r = rule(&format!("name = \"llm\"\ncap = {forty}\n"));
        assert!(
            r.starts_with(&format!(
                "is not valid TOML at line 2, column 7 (`{forty}`): "
            )),
            "{r}"
        );
        let r = rule(&format!("name = \"llm\"\ncap = {longer}\n"));
        assert!(
            r.starts_with("is not valid TOML at line 2, column 7: "),
            "{r}"
        );
    }

    #[test]
    fn environment_overrides_win_and_nest() {
        let vars = [
            ("PALISADE_RETRY__JITTER", "\"none\""),
            ("PALISADE_BREAKER__OPEN_DURATION", "600ms"),
            (
                "PALISADE_BREAKER__FAILURE_RATE",
                "{ ratio = 0.25, min_calls = 8 }",
            ),
            ("PALISADE_ATTEMPT_TIMEOUT__LIMIT", "750ms"),
            ("OTHER_VAR", "ignored"),
        ];
        let config =
            PresetConfig::from_toml_with_env("name = \"llm\"\n[retry]\njitter = \"full\"", vars)
                .unwrap();
        assert_eq!(config.retry.jitter, JitterConfig::None);
        assert_eq!(config.breaker.open_duration, Duration::from_millis(600));
        assert_eq!(config.breaker.failure_rate.map(|r| r.ratio), Some(0.25));
        assert_eq!(config.attempt_timeout.limit, Duration::from_millis(750));
        let err =
            PresetConfig::from_toml_with_env("name = \"llm\"", [("PALISADE_RETRY__TRIES", "3")])
                .unwrap_err();
        assert_eq!(err.field(), "retry.tries");
        let err = PresetConfig::from_toml_with_env("name = \"llm\"", [("PALISADE_NAME__X", "3")])
            .unwrap_err();
        assert_eq!(err.field(), "name");
    }

    /// An override's value is one TOML value or a string: a value holding more than one
    /// (`5` and a line more) was cut to its first, and the rest dropped without a word.
    #[test]
    fn an_override_value_with_more_than_one_toml_value_is_not_cut_short() {
        let err = env_error(
            "name = \"llm\"",
            "PALISADE_RETRY__MAX_ATTEMPTS",
            "5\nbogus = 1",
        );
        assert_eq!(err.field(), "retry.max_attempts", "{err}");
        assert!(
            err.rule()
                .starts_with("(from `PALISADE_RETRY__MAX_ATTEMPTS`) invalid type: string"),
            "{err}"
        );
        // What follows the first line is not dropped: `max_attempts = 0` is not read, and the
        // deadline is not a 5 s one.
        let err = env_error(
            "name = \"llm\"",
            "PALISADE_DEADLINE",
            "\"5s\"\n[retry]\nmax_attempts = 0",
        );
        assert_eq!(err.field(), "deadline", "{err}");
        assert!(
            err.rule()
                .starts_with("(from `PALISADE_DEADLINE`) invalid duration"),
            "{err}"
        );
        // One value, with blanks, a comment or a trailing newline, is still read as it.
        for value in ["5", " 5 ", "5 # five", "5\n"] {
            let config = PresetConfig::from_toml_with_env(
                "name = \"llm\"",
                [("PALISADE_RETRY__MAX_ATTEMPTS", value)],
            )
            .unwrap_or_else(|e| panic!("{value:?}: {e}"));
            assert_eq!(config.retry.max_attempts, 5, "{value:?}");
        }
    }

    /// A feature is named as the file writes it: `[features.Web-Search]` by
    /// `PALISADE_FEATURES__Web-Search__…` (or `web-search`, as the key is read in any case),
    /// not refused with "did you mean `Web-Search`?".
    #[test]
    fn an_override_names_a_feature_as_the_file_writes_it_in_any_case() {
        let file = "name = \"x\"\n[features.Web-Search]\ncooldown = \"1s\"";
        for var in [
            "PALISADE_FEATURES__Web-Search__COOLDOWN",
            "PALISADE_FEATURES__web-search__COOLDOWN",
            "PALISADE_FEATURES__WEB_SEARCH__COOLDOWN",
        ] {
            let config = PresetConfig::from_toml_with_env(file, [(var, "2s")])
                .unwrap_or_else(|e| panic!("{var}: {e}"));
            assert_eq!(
                config.features["Web-Search"].cooldown,
                Duration::from_secs(2),
                "{var}"
            );
            assert_eq!(config.features.len(), 1, "{var}");
        }
    }

    /// A variable naming a key thousands of levels deep (a long run of `__`) is an error,
    /// not a stack overflow that aborts the process while the nested tables it built are
    /// dropped.
    #[test]
    fn an_override_nested_thousands_of_levels_deep_is_an_error_not_an_abort() {
        let var = format!("PALISADE_RETRY__{}X", "A__".repeat(50_000));
        let err = env_error("name = \"llm\"", &var, "1");
        assert_eq!(err.field(), "(environment)", "{}", err.rule().len());
        assert!(
            err.rule().contains("50002 levels deep"),
            "{}",
            &err.rule()[..200]
        );
        // A deep but plausible typo is still an unknown key, named.
        let err = env_error("name = \"llm\"", "PALISADE_RETRY__BUDGET__RATIO__A__B", "1");
        assert_eq!(err.field(), "retry.budget.ratio", "{err}");
    }

    /// A number of milliseconds too large for a duration says so in milliseconds, not in
    /// "float seconds" "too big or NaN" (a file's number is never NaN here).
    #[test]
    fn a_number_of_milliseconds_too_large_says_so_in_milliseconds() {
        for text in [
            "deadline = 1e300",
            "deadline = \"1e300\"",
            "deadline = 1.9e22",
        ] {
            let err = PresetConfig::from_toml(&format!("name = \"llm\"\n{text}")).unwrap_err();
            if text.contains('"') {
                // Text with an exponent is humantime's to read: refused, in its words.
                assert_eq!(err.field(), "deadline", "{err}");
                continue;
            }
            assert_eq!(err.field(), "deadline", "{text}: {err}");
            assert!(!err.rule().contains("float seconds"), "{text}: {err}");
            assert!(!err.rule().contains("NaN"), "{text}: {err}");
            assert!(err.rule().contains("milliseconds"), "{text}: {err}");
            assert!(err.rule().contains("at most"), "{text}: {err}");
        }
        let err = PresetConfig::from_toml_with_env(
            "name = \"llm\"",
            [("PALISADE_DEADLINE", "\"99999999999999999999999999.5\"")],
        )
        .unwrap_err();
        assert!(err.rule().contains("milliseconds"), "{err}");
        assert!(err.rule().contains("at most"), "{err}");
    }

    /// Two variables naming the same key (`PALISADE_DEADLINE` and `palisade_deadline`, a
    /// feature by two spellings, an endpoint as `1` and `01`) with different values are an
    /// error naming both, whatever the order of the environment: the lower-case one won
    /// without a word. With the same value, either would do, and it is read.
    #[test]
    fn two_variables_naming_the_same_key_with_different_values_are_an_error() {
        let file = "name = \"llm\"\n[[endpoints]]\naddress = \"a\"\n[[endpoints]]\naddress = \"b\"\n\
                    [features.web-search]";
        let cases = [
            ("PALISADE_DEADLINE", "palisade_deadline", "deadline"),
            (
                "PALISADE_RETRY__MAX_ATTEMPTS",
                "PALISADE_Retry__Max_Attempts",
                "retry.max_attempts",
            ),
            (
                "PALISADE_FEATURES__WEB_SEARCH__COOLDOWN",
                "PALISADE_FEATURES__web-search__COOLDOWN",
                "features.web-search.cooldown",
            ),
            (
                "PALISADE_ENDPOINTS__1__TIER",
                "PALISADE_ENDPOINTS__01__TIER",
                "endpoints[1].tier",
            ),
        ];
        for (a, b, field) in cases {
            let (first, second) = if a < b { (a, b) } else { (b, a) };
            let rule = format!(
                "is set by two variables with different values, `{first}` and `{second}`: both \
                 name this key (a variable's name is read in any case), and neither is taken \
                 over the other; set one"
            );
            for vars in [
                [(a, "20"), (b, "30")],
                [(b, "30"), (a, "20")],
                [(b, "20"), (a, "30")],
            ] {
                let err = PresetConfig::from_toml_with_env(file, vars).unwrap_err();
                assert_eq!(
                    (err.field(), err.rule()),
                    (field, rule.as_str()),
                    "{vars:?}"
                );
            }
            // The same value twice is that value.
            for vars in [[(a, "20"), (b, "20")], [(b, "20"), (a, " 20 ")]] {
                PresetConfig::from_toml_with_env(file, vars)
                    .unwrap_or_else(|e| panic!("{vars:?}: {e}"));
            }
        }
        let config = PresetConfig::from_toml_with_env(
            file,
            [("palisade_deadline", "2s"), ("PALISADE_DEADLINE", "\"2s\"")],
        )
        .unwrap();
        assert_eq!(config.deadline, Duration::from_secs(2));
    }

    /// A feature's name names it in the switchboard, its metrics and its errors: an empty or
    /// blank one (`[features.""]`) is refused, from the file, from a variable that sets the
    /// whole table, by `validate` and by `switchboard`; a variable with an empty level where
    /// a name goes names no key.
    #[test]
    fn an_empty_feature_name_is_refused() {
        let rule = "must not be empty or only whitespace: a feature is named by its key \
                    (`[features.summarise]`)";
        for (name, field) in [("", "features.\"\""), (" \\t", "features.\" \t\"")] {
            let err = PresetConfig::from_toml(&format!(
                "name = \"llm\"\n[features.\"{name}\"]\ncooldown = \"1s\""
            ))
            .unwrap_err();
            assert_eq!((err.field(), err.rule()), (field, rule), "{name:?}");
        }
        let err = env_error(
            "name = \"llm\"",
            "PALISADE_FEATURES",
            "{ \"\" = { cooldown = \"1s\" } }",
        );
        assert_eq!(err.field(), "features.\"\"");
        assert_eq!(err.rule(), format!("(from `PALISADE_FEATURES`) {rule}"));
        for var in ["PALISADE_FEATURES____COOLDOWN", "PALISADE_FEATURES__"] {
            let err = env_error("name = \"llm\"\n[features.search]", var, "1s");
            assert_eq!(err.field(), "(environment)", "{var}");
            assert!(
                err.rule().contains(&format!("naming no key, `{var}`")),
                "{err}"
            );
        }
        let mut config = PresetConfig::from_toml("name = \"llm\"\n[features.search]").unwrap();
        let search = config.features.remove("search").unwrap();
        config.features.insert(String::new(), search);
        assert_eq!(config.validate().unwrap_err().field(), "features.\"\"");
        assert_eq!(config.switchboard().unwrap_err().field(), "features.\"\"");
    }

    /// An override can break a rule between two keys on the other key: `PALISADE_DEADLINE=5ms`
    /// makes the default `retry.min_attempt_time` (10 ms) too long. The error names the key
    /// the rule is about, and the variable and the key it set (it named neither): the
    /// variables without which the error goes away.
    #[test]
    fn an_error_an_override_caused_on_another_key_names_the_variable_and_its_key() {
        let err = env_error("name = \"llm\"", "PALISADE_DEADLINE", "5ms");
        assert_eq!(err.field(), "retry.min_attempt_time");
        assert_eq!(
            err.rule(),
            "(from `PALISADE_DEADLINE`, which set `deadline`) must be less than `deadline` \
             (5ms) while `retry.max_attempts` is above 1, or no retry could ever start (it is \
             10ms)"
        );
        // A layer's own rule between two keys: the timeout's cap, and the limit set.
        let err = env_error(
            "name = \"llm\"\n[attempt_timeout]\nescalate = { factor = 2.0, cap = \"30s\" }",
            "PALISADE_ATTEMPT_TIMEOUT__LIMIT",
            "40s",
        );
        assert_eq!(err.field(), "attempt_timeout.escalate.cap");
        assert!(
            err.rule().starts_with(
                "(from `PALISADE_ATTEMPT_TIMEOUT__LIMIT`, which set `attempt_timeout.limit`) "
            ),
            "{err}"
        );
        // Among other overrides, the one that made the error; two when it takes both.
        let err = PresetConfig::from_toml_with_env(
            "name = \"llm\"",
            [
                ("PALISADE_RETRY__CAP", "10s"),
                ("PALISADE_DEADLINE", "5ms"),
                ("PALISADE_BREAKER__OPEN_DURATION", "600ms"),
            ],
        )
        .unwrap_err();
        assert!(
            err.rule()
                .starts_with("(from `PALISADE_DEADLINE`, which set `deadline`) must be"),
            "{err}"
        );
        let err = PresetConfig::from_toml_with_env(
            "name = \"llm\"\n[retry]\nmax_attempts = 1",
            [
                ("PALISADE_RETRY__MAX_ATTEMPTS", "3"),
                ("PALISADE_DEADLINE", "5ms"),
            ],
        )
        .unwrap_err();
        assert_eq!(err.field(), "retry.min_attempt_time");
        assert!(
            err.rule().starts_with(
                "(from `PALISADE_DEADLINE`, which set `deadline`, and \
                 `PALISADE_RETRY__MAX_ATTEMPTS`, which set `retry.max_attempts`) must be"
            ),
            "{err}"
        );
        // An error the file makes without the override is the file's.
        let err = env_error(
            "name = \"llm\"\ndeadline = \"5ms\"",
            "PALISADE_DEADLINE",
            "6ms",
        );
        assert_eq!(err.field(), "retry.min_attempt_time");
        assert!(
            err.rule().starts_with("must be less than `deadline` (6ms)"),
            "{err}"
        );
    }

    /// The process's variables are read with `vars_os`, as `std::env::vars` panics on one
    /// that is not UTF-8: such a variable is left out, or refused when it is a `PALISADE_…`
    /// one, named.
    #[cfg(unix)]
    #[test]
    fn a_variable_that_is_not_utf8_is_left_out_unless_it_is_ours() {
        use std::os::unix::ffi::OsStringExt;
        let bytes = |b: &[u8]| OsString::from_vec(b.to_vec());
        let text = |s: &str| OsString::from(s);
        let vars = prefixed_vars([
            (text("HOME"), bytes(b"/home/\xff")),
            (bytes(b"X\xff"), text("1")),
            (bytes(b"\xffPALISADE_DEADLINE"), text("1")),
            (text("palisade_retry__max_attempts"), text("5")),
            (text("OTHER"), text("x")),
        ])
        .unwrap();
        assert_eq!(
            vars,
            [("palisade_retry__max_attempts".to_owned(), "5".to_owned())]
        );
        let err = prefixed_vars([(text("PALISADE_DEADLINE"), bytes(b"4\xff5s"))]).unwrap_err();
        assert_eq!(
            (err.field(), err.rule()),
            (
                "(environment)",
                "has a variable whose value is not UTF-8, `PALISADE_DEADLINE`: a `PALISADE_` \
                 variable is read as text"
            )
        );
        let err = prefixed_vars([(bytes(b"Palisade_DEAD\xffLINE"), text("45s"))]).unwrap_err();
        assert_eq!(
            err.rule(),
            "has a variable whose name is not UTF-8, `Palisade_DEAD\u{FFFD}LINE`: a `PALISADE_` \
             variable is read as text"
        );
        // The process's, all ours.
        for (name, _) in env_vars().unwrap() {
            assert!(env_path(&name).is_some(), "{name}");
        }
    }

    /// A seed is a `u64`, a TOML integer an `i64`: a seed above `i64::MAX` is written as a
    /// string of digits, in the file and in a variable (where it was refused as "invalid type:
    /// string", expected a whole number), for each seed key, and a config holding one writes
    /// it so and reads it back (`toml::to_string` refused it).
    #[test]
    fn a_seed_above_tomls_largest_integer_is_written_as_a_string() {
        let file = |seed: &str| {
            format!(
                "name = \"x\"\n[retry]\nseed = {seed}\n[breaker]\nseed = {seed}\n[route]\nseed = {seed}"
            )
        };
        for (seed, value) in [
            ("\"18446744073709551615\"", u64::MAX),
            ("\"9223372036854775808\"", 1 << 63),
            ("9223372036854775807", i64::MAX as u64),
            ("\"0\"", 0),
            ("5", 5),
        ] {
            let config = PresetConfig::from_toml(&file(seed)).unwrap();
            let seeds = (
                config.retry.seed,
                config.breaker.seed,
                config.route.unwrap().seed,
            );
            assert_eq!(seeds, (Some(value), value, value), "{seed}");
            let text = toml::to_string(&config).unwrap();
            assert_eq!(PresetConfig::from_toml(&text).unwrap(), config, "{text}");
            config.builder().unwrap();
        }
        let config = PresetConfig::from_toml_with_env(
            "name = \"x\"",
            [
                ("PALISADE_RETRY__SEED", "18446744073709551615"),
                ("PALISADE_BREAKER__SEED", "18446744073709551614"),
                ("PALISADE_ROUTE__SEED", "\"18446744073709551613\""),
            ],
        )
        .unwrap();
        assert_eq!(config.retry.seed, Some(u64::MAX));
        assert_eq!(config.breaker.seed, u64::MAX - 1);
        assert_eq!(config.route.unwrap().seed, u64::MAX - 2);
    }

    /// A seed that is not one is refused naming the key and the range, with how to write one
    /// above TOML's largest integer; such an integer written bare is not TOML, and the error
    /// names the key it is the value of (it said "`(file)` … u64 value was too large").
    #[test]
    fn a_seed_that_is_not_one_is_refused_naming_the_key_and_the_range() {
        let expected = "a seed, a whole number from 0 to 18446744073709551615 (written as a \
                        string above 9223372036854775807, TOML's largest integer: \
                        \"18446744073709551615\")";
        for key in ["retry", "breaker", "route"] {
            let field = format!("{key}.seed");
            for (seed, found) in [
                ("-1", "invalid value: integer `-1`"),
                ("\"-1\"", "invalid value: string \"-1\""),
                ("\"seven\"", "invalid value: string \"seven\""),
                (
                    "\"18446744073709551616\"",
                    "invalid value: string \"18446744073709551616\"",
                ),
                ("1.5", "invalid type: floating point `1.5`"),
            ] {
                let err = PresetConfig::from_toml(&format!("name = \"x\"\n[{key}]\nseed = {seed}"))
                    .unwrap_err();
                assert_eq!(
                    (err.field(), err.rule()),
                    (
                        field.as_str(),
                        format!("{found}, expected {expected}").as_str()
                    )
                );
            }
            let err = PresetConfig::from_toml(&format!(
                "name = \"x\"\n[{key}]\nseed = 18446744073709551615"
            ))
            .unwrap_err();
            assert_eq!(
                (err.field(), err.rule()),
                (
                    field.as_str(),
                    "is not valid TOML at line 3, column 8: `18446744073709551615` is above \
                     9223372036854775807, TOML's largest integer (a seed above it is written \
                     as a string of digits: `\"18446744073709551615\"`)"
                )
            );
        }
        let err = env_error("name = \"x\"", "PALISADE_RETRY__SEED", "-1");
        assert_eq!(err.field(), "retry.seed");
        assert_eq!(
            err.rule(),
            format!(
                "(from `PALISADE_RETRY__SEED`) invalid value: integer `-1`, expected {expected}"
            )
        );
        // Any integer beyond TOML's names its key; only a seed is offered the string.
        for (text, field, rule) in [
            (
                "[retry]\nmax_attempts = 9_223_372_036_854_775_808",
                "retry.max_attempts",
                "is not valid TOML at line 3, column 16: `9_223_372_036_854_775_808` is above \
                 9223372036854775807, TOML's largest integer",
            ),
            (
                "[retry]\nmax_attempts = -9223372036854775809",
                "retry.max_attempts",
                "is not valid TOML at line 3, column 16: `-9223372036854775809` is below \
                 -9223372036854775808, TOML's smallest integer",
            ),
            (
                "[route]\noutlier = { consecutive_failures = +99999999999999999999 }",
                "route.outlier.consecutive_failures",
                "is not valid TOML at line 3, column 36: `+99999999999999999999` is above \
                 9223372036854775807, TOML's largest integer",
            ),
            (
                "[[endpoints]]\naddress = \"a\"\n[[endpoints]]\naddress = \"b\"\ntier = 1e99\n\
                 [retry]\nseed = 99999999999999999999",
                "retry.seed",
                "is not valid TOML at line 8, column 8: `99999999999999999999` is above \
                 9223372036854775807, TOML's largest integer",
            ),
            (
                "[retry]\nseed = 0xFFFF_FFFF_FFFF_FFFF",
                "retry.seed",
                "is not valid TOML at line 3, column 8: `0xFFFF_FFFF_FFFF_FFFF` is above \
                 9223372036854775807, TOML's largest integer (a seed above it is written as a \
                 string of digits: `\"18446744073709551615\"`)",
            ),
            (
                // A negative one is no seed: no string is offered (the digits alone, without
                // their sign, were).
                "[retry]\nseed = -18446744073709551615",
                "retry.seed",
                "is not valid TOML at line 3, column 8: `-18446744073709551615` is below \
                 -9223372036854775808, TOML's smallest integer",
            ),
            (
                "[retry]\nmax_attempts = 0o1000000000000000000000",
                "retry.max_attempts",
                "is not valid TOML at line 3, column 16: `0o1000000000000000000000` is above \
                 9223372036854775807, TOML's largest integer",
            ),
            (
                "[retry]\nseed = 0b1_0000000000000000000000000000000000000000000000000000000000000000",
                "retry.seed",
                "is not valid TOML at line 3, column 8: \
                 `0b1_0000000000000000000000000000000000000000000000000000000000000000` is above \
                 9223372036854775807, TOML's largest integer",
            ),
            (
                "[[endpoints]]\naddress = \"a\"\n[[endpoints]]\naddress = \"b\"\n\
                 tier = 18446744073709551615",
                "endpoints[1].tier",
                "is not valid TOML at line 6, column 8: `18446744073709551615` is above \
                 9223372036854775807, TOML's largest integer",
            ),
        ] {
            let err = PresetConfig::from_toml(&format!("name = \"x\"\n{text}")).unwrap_err();
            assert_eq!((err.field(), err.rule()), (field, rule), "{text}");
        }
        // The largest and smallest integers are TOML, and other errors are the parser's.
        let err =
            PresetConfig::from_toml("name = \"x\"\n[retry]\nmax_attempts = -9223372036854775808")
                .unwrap_err();
        assert_eq!(err.field(), "retry.max_attempts");
        let err = PresetConfig::from_toml("name = \"x\"\n[retry]\nseed = 12_").unwrap_err();
        assert_eq!(err.field(), "(file)");
        let config =
            PresetConfig::from_toml("name = \"x\"\n[retry]\nseed = 0x7FFF_FFFF_FFFF_FFFF").unwrap();
        assert_eq!(config.retry.seed, Some(i64::MAX as u64));
        for text in ["seed = 0xG1", "seed = -0x1", "seed = 0x"] {
            let err =
                PresetConfig::from_toml(&format!("name = \"x\"\n[retry]\n{text}")).unwrap_err();
            assert_eq!(err.field(), "(file)", "{text}");
        }
    }

    /// A kind that takes no settings is a word: written as a table with empty settings
    /// (`jitter = { full = {} }`, which the toml crate reads as `"full"`) it was accepted
    /// without a word, and with settings (`{ full = { x = 1 } }`) refused as "expected empty
    /// table". Each is refused with the key's shapes, as a kind that takes settings and is
    /// given none (`backoff = { constant = {} }`, `window = { count = {} }`) is, for every
    /// key naming a kind. The default's kind with an empty table keeps the default's settings.
    #[test]
    fn a_kind_written_as_a_table_without_its_settings_is_refused() {
        let cases = [
            ("retry", "jitter", "{ full = {} }"),
            ("retry", "jitter", "{ none = [] }"),
            ("retry", "jitter", "{ decorrelated = {} }"),
            ("retry", "jitter", "{ equal = { x = 1 } }"),
            ("retry", "jitter", "{ full = [1] }"),
            ("breaker", "cancel", "{ ignore = {} }"),
            ("breaker", "cancel", "{ failure = [] }"),
            ("breaker", "cancel", "{ failure = { x = 1 } }"),
            ("retry", "backoff", "{ constant = {} }"),
            ("retry", "backoff", "{ linear = [] }"),
            ("breaker", "window", "{ count = {} }"),
            ("breaker", "window", "{ time = {} }"),
            ("breaker", "window", "{ recent = [] }"),
            ("route.health", "ramp", "{ linear = {} }"),
        ];
        for (section, key, value) in cases {
            let field = format!("{section}.{key}");
            let shapes = SHAPES.iter().find(|(k, _)| *k == field).unwrap().1;
            let rule = format!("invalid value: table `{value}`, expected {shapes}");
            let err =
                PresetConfig::from_toml(&format!("name = \"x\"\n[{section}]\n{key} = {value}"))
                    .unwrap_err();
            assert_eq!((err.field(), err.rule()), (field.as_str(), rule.as_str()));
            let var = format!("PALISADE_{}__{key}", section.replace('.', "__")).to_uppercase();
            let err = env_error("name = \"x\"", &var, value);
            assert_eq!(
                (err.field(), err.rule()),
                (field.as_str(), format!("(from `{var}`) {rule}").as_str())
            );
        }
        // The words, and the default's kind with its settings left out, are read.
        let config = PresetConfig::from_toml(
            "name = \"x\"\n[retry]\njitter = \"full\"\nbackoff = { exponential = {} }\n\
             [breaker]\ncancel = \"failure\"\nwindow = { recent = {} }\n\
             [route.health]\nramp = { steps = {} }",
        )
        .unwrap();
        let defaults = PresetConfig::from_toml("name = \"x\"\n[route]").unwrap();
        assert_eq!(config.retry.jitter, JitterConfig::Full);
        assert_eq!(config.retry.backoff, defaults.retry.backoff);
        assert_eq!(
            config.breaker.cancel,
            palisade_breaker::CancelPolicy::Failure
        );
        assert_eq!(config.breaker.window, defaults.breaker.window);
        assert_eq!(
            config.route.unwrap().health.ramp,
            defaults.route.unwrap().health.ramp
        );
    }

    /// Every key that takes a value or `"off"` says so when given a value of the wrong type:
    /// `consecutive_failures = true` said "expected a whole number, at least 0", without the
    /// `"off"` it also takes. The keys whose value is a table say so in their shapes.
    #[test]
    fn an_off_able_key_given_the_wrong_type_offers_off() {
        let number = "a whole number, at least 0, or \"off\" to turn the rule off";
        let fraction = "a number, or \"off\" to turn the rule off";
        let keys = [
            ("breaker", "consecutive_failures", number),
            ("route", "panic_ratio", fraction),
            ("route.outlier", "consecutive_failures", number),
            ("route.outlier", "failure_ratio", fraction),
            ("route.outlier", "success_rate_stdev_factor", fraction),
            ("features.summarise", "failures_to_turn_off", number),
        ];
        for (section, key, expected) in keys {
            let field = format!("{section}.{key}");
            for (value, found) in [
                ("true", "invalid type: boolean `true`"),
                ("[1]", "invalid type: array"),
                ("{ a = 1 }", "invalid type: table"),
                ("\"yes\"", "invalid type: string \"yes\""),
            ] {
                let err =
                    PresetConfig::from_toml(&format!("name = \"x\"\n[{section}]\n{key} = {value}"))
                        .unwrap_err();
                assert_eq!(
                    (err.field(), err.rule()),
                    (
                        field.as_str(),
                        format!("{found}, expected {expected}").as_str()
                    ),
                );
            }
            let var = format!("PALISADE_{}__{key}", section.replace('.', "__")).to_uppercase();
            let err = env_error("name = \"x\"\n[features.summarise]", &var, "true");
            assert_eq!(
                (err.field(), err.rule()),
                (
                    field.as_str(),
                    format!("(from `{var}`) invalid type: boolean `true`, expected {expected}")
                        .as_str()
                ),
            );
        }
        for (section, key) in [
            ("attempt_timeout", "escalate"),
            ("breaker", "failure_rate"),
            ("breaker", "slow_call_rate"),
            ("breaker", "throttle"),
        ] {
            let err = PresetConfig::from_toml(&format!("name = \"x\"\n[{section}]\n{key} = true"))
                .unwrap_err();
            assert_eq!(err.field(), format!("{section}.{key}"));
            assert!(err.rule().contains("`\"off\"`"), "{err}");
        }
    }

    /// The key after the prefix is read in any case (`PALISADE_Retry__Max_Attempts` sets
    /// `retry.max_attempts`), and so is the prefix: `palisade_retry__max_attempts=0` (lower
    /// case, as a shell user may write it) was skipped without a word.
    #[test]
    fn a_prefix_in_another_case_is_not_silently_ignored() {
        let mixed = PresetConfig::from_toml_with_env(
            "name = \"llm\"",
            [("PALISADE_Retry__Max_Attempts", "0")],
        );
        assert_eq!(mixed.unwrap_err().field(), "retry.max_attempts");
        let lower = PresetConfig::from_toml_with_env(
            "name = \"llm\"",
            [("palisade_retry__max_attempts", "0")],
        );
        assert!(
            lower.is_err(),
            "palisade_retry__max_attempts=0 was ignored: {:?}",
            lower.map(|c| c.retry.max_attempts)
        );
    }
}
