//! palisade's own failures, with their classes: every error a palisade layer makes.
//!
//! They live in the core crate so that [`class_of`] knows each of them by
//! type, with no registry, no lock and nothing to set up: a test, a user's layer or a log line
//! reading any of them gets its class whether or not the layer that makes it was ever built.
//! Each layer's crate re-exports its own under its usual path
//! (`palisade_breaker::CircuitOpen`, `palisade_timeout::error::Elapsed`, ...), and
//! `downcast_ref` works as usual. [`register`](crate::register) remains for users' own error
//! types.
//!
//! | error | made by | class |
//! |---|---|---|
//! | [`Elapsed`] | palisade-timeout's `Timeout` | `Timeout`, retryable |
//! | [`DeadlineExceeded`] | palisade-timeout's `Deadline`, palisade-http's `ServerDeadline` | `Timeout`, not retryable |
//! | [`CircuitOpen`] | palisade-breaker | `Rejected`, retryable unless isolated, with the time left open |
//! | [`NoHealthyEndpoint`] | palisade-route | `ServerError`, retryable, with when an endpoint returns |
//! | [`FallbackFailed`] | palisade-fallback | the original failure's, not retryable |
//! | [`FeatureOff`] | palisade-fallback's switchboard | `Rejected`, not retryable |
//! | [`Injected`] | palisade-chaos | the class the fault was given |
//! | [`AfterTimeouts`] | palisade-retry, around a final error that followed timed-out attempts | the wrapped error's (transparent) |

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::{BoxError, Category, Class, HasClass, class_of};

/// The class of `err` itself (not its sources) if it is one of palisade's own failures: a few
/// type-id comparisons, on the failure path only.
pub(crate) fn own_class(err: &(dyn Error + 'static)) -> Option<Class> {
    if let Some(e) = err.downcast_ref::<Elapsed>() {
        return Some(e.class());
    }
    if let Some(e) = err.downcast_ref::<DeadlineExceeded>() {
        return Some(e.class());
    }
    if let Some(e) = err.downcast_ref::<CircuitOpen>() {
        return Some(e.class());
    }
    if let Some(e) = err.downcast_ref::<NoHealthyEndpoint>() {
        return Some(e.class());
    }
    if let Some(e) = err.downcast_ref::<FallbackFailed>() {
        return Some(e.class());
    }
    if let Some(e) = err.downcast_ref::<FeatureOff>() {
        return Some(e.class());
    }
    if let Some(e) = err.downcast_ref::<Injected>() {
        return Some(HasClass::class(e));
    }
    None
}

// ---- palisade-timeout ----

/// An attempt did not finish within its per-attempt timeout.
///
/// It says which limit ran out: palisade-timeout's `Timeout` makes it
/// [`with_limit`](Self::with_limit) the limit of the attempt that timed out (an escalated one
/// after earlier timeouts), displayed `attempt timed out after 10 s`; one made with
/// [`new`](Self::new) knows no limit and says `attempt timed out`. It is a `Copy` value with
/// no allocation.
///
/// Classified as [`Category::Timeout`], retryable: another attempt may be faster.
///
/// ```
/// use palisade_core::failure::Elapsed;
/// use std::time::Duration;
///
/// let err = Elapsed::with_limit(Duration::from_millis(2_500));
/// assert_eq!(err.to_string(), "attempt timed out after 2.5 s");
/// assert_eq!(err.limit(), Some(Duration::from_millis(2_500)));
/// assert_eq!(Elapsed::new().to_string(), "attempt timed out");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Elapsed {
    limit: Option<Duration>,
}

impl Elapsed {
    /// A timeout whose limit is not known.
    pub const fn new() -> Self {
        Elapsed { limit: None }
    }

    /// The timeout of an attempt that was granted `limit`.
    pub const fn with_limit(limit: Duration) -> Self {
        Elapsed { limit: Some(limit) }
    }

    /// The limit that ran out (the attempt's, escalated or not), when known.
    pub const fn limit(&self) -> Option<Duration> {
        self.limit
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.limit {
            Some(limit) => write!(f, "attempt timed out after {}", Human(limit)),
            None => f.write_str("attempt timed out"),
        }
    }
}

impl std::error::Error for Elapsed {}

impl HasClass for Elapsed {
    fn class(&self) -> Class {
        Class::new(Category::Timeout)
    }
}

/// The whole call, retries and backoff included, did not finish before its deadline.
///
/// It says which deadline passed: palisade-timeout's `Deadline` makes it
/// [`with_limit`](Self::with_limit) the time the call was granted, displayed
/// `deadline of 30 s exceeded` (under an enclosing deadline that ends first, such as one a
/// caller sent in a header, the time that one left the call); palisade-http's
/// `ServerDeadline` makes it with the limit its request's headers asked for. One made with
/// [`new`](Self::new) knows no limit and says `deadline exceeded`. It is a `Copy` value with
/// no allocation.
///
/// Classified as [`Category::Timeout`] but **not** retryable: the time the caller granted is
/// spent, so no layer above should try again.
///
/// ```
/// use palisade_core::failure::DeadlineExceeded;
/// use std::time::Duration;
///
/// let err = DeadlineExceeded::with_limit(Duration::from_secs(30));
/// assert_eq!(err.to_string(), "deadline of 30 s exceeded");
/// assert_eq!(err.limit(), Some(Duration::from_secs(30)));
/// assert_eq!(DeadlineExceeded::new().to_string(), "deadline exceeded");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeadlineExceeded {
    limit: Option<Duration>,
}

impl DeadlineExceeded {
    /// A deadline whose limit is not known.
    pub const fn new() -> Self {
        DeadlineExceeded { limit: None }
    }

    /// The end of a call that was granted `limit`.
    pub const fn with_limit(limit: Duration) -> Self {
        DeadlineExceeded { limit: Some(limit) }
    }

    /// The time the call was granted, when known.
    pub const fn limit(&self) -> Option<Duration> {
        self.limit
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.limit {
            Some(limit) => write!(f, "deadline of {} exceeded", Human(limit)),
            None => f.write_str("deadline exceeded"),
        }
    }
}

impl std::error::Error for DeadlineExceeded {}

impl HasClass for DeadlineExceeded {
    fn class(&self) -> Class {
        Class::new(Category::Timeout).with_retryable(false)
    }
}

// ---- palisade-breaker ----

/// A circuit breaker's state (re-exported by palisade-breaker as `State`). "Open" means open like a circuit: **rejecting** calls (some libraries
/// use the word the other way round).
///
/// Its discriminant (`state as u8`) is its code: the value of the `palisade.breaker.state`
/// gauge, and what a breaker keeps in its state word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BreakerState {
    /// Calls flow; outcomes are counted.
    Closed = 0,
    /// Calls are rejected at once until the open period ends.
    Open = 1,
    /// A bounded number of probe calls find out whether the dependency is back.
    HalfOpen = 2,
    /// Forced open by an operator: rejecting until closed or reset by hand.
    Isolated = 3,
    /// Bypassed by an operator: lets every call through, never rejects; outcomes are still
    /// counted (metrics only).
    Bypassed = 4,
}

impl BreakerState {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Isolated => "isolated",
            BreakerState::Bypassed => "bypassed",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The breaker rejected the call without calling the dependency.
///
/// Its class is [`Category::Rejected`]: it never counts against health (the breaker counted
/// the failures that opened it), and it is retryable, except while an operator keeps the
/// breaker isolated. `retry_after` says when the breaker will probe again (the time left in its
/// open period); a retry layer above waits exactly that long and tries again without spending
/// retry budget, since the rejected attempt added no load: the breaker stays the one control
/// of what reaches the dependency (probes while half-open, everything once closed).
/// While half-open with every probe slot taken, `retry_after` is about one open period
/// (spread between half and one and a half of `open_duration`, so that the refused calls do
/// not all come back at once): by then the probes have closed or re-opened the breaker.
/// `retry_after` is `None` while isolated and when a closed breaker's adaptive
/// `Throttle` refused the call (`state` is then `Closed`): a retry of a
/// throttled call is an ordinary retry, within the retry budget.
///
/// It names the breaker that refused ([`breaker`](Self::breaker)): behind a parent breaker
/// and per-key children, a refusal by the parent names the parent (`provider`), one by a child
/// names the child (`models["small"]`). Its message says who and for how long, in
/// human form: `circuit 'llm' open, retry in 480 ms`.
///
/// Building it costs a reference count on the breaker's name, not a copy of it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CircuitOpen {
    /// How long until the breaker probes again, when known.
    pub retry_after: Option<Duration>,
    /// The state that rejected the call.
    pub state: BreakerState,
    /// The name of the breaker that rejected the call (for a per-key breaker, its layer's name
    /// followed by the key: `models["small"]`).
    pub breaker: Arc<str>,
}

impl CircuitOpen {
    /// The refusal of the breaker named `breaker`, in `state`, probing again in `retry_after`
    /// when known.
    pub fn new(breaker: Arc<str>, state: BreakerState, retry_after: Option<Duration>) -> Self {
        CircuitOpen {
            retry_after,
            state,
            breaker,
        }
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &*self.breaker;
        match self.state {
            BreakerState::Isolated => write!(f, "circuit '{name}' open (isolated by an operator)")?,
            BreakerState::HalfOpen => {
                write!(f, "circuit '{name}' open (half-open, its probes busy)")?
            }
            BreakerState::Closed => write!(
                f,
                "circuit '{name}' throttled (the dependency accepts too few calls)"
            )?,
            BreakerState::Open | BreakerState::Bypassed => write!(f, "circuit '{name}' open")?,
        }
        match self.retry_after {
            Some(d) => write!(f, ", retry in {}", Human(d)),
            None => Ok(()),
        }
    }
}

/// A duration as a person reads it: `250 µs`, `480 ms`, `2.5 s`, `30 s`, `4 min 30 s`,
/// `1 h 5 min`.
struct Human(Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        let secs = self.0.as_secs();
        match secs {
            // Below a millisecond (and not zero): microseconds, or nanoseconds below those.
            0 if ms == 0 && !self.0.is_zero() => match self.0.as_micros() {
                0 => write!(f, "{} ns", self.0.as_nanos()),
                us => write!(f, "{us} µs"),
            },
            0 => write!(f, "{ms} ms"),
            1..60 => {
                // Tenths of a second, rounded; a whole number of seconds without ".0".
                let tenths = (ms + 50) / 100;
                match tenths % 10 {
                    0 => write!(f, "{} s", tenths / 10),
                    tenth => write!(f, "{}.{tenth} s", tenths / 10),
                }
            }
            60..3600 => match secs % 60 {
                0 => write!(f, "{} min", secs / 60),
                s => write!(f, "{} min {s} s", secs / 60),
            },
            _ => match (secs % 3600) / 60 {
                0 => write!(f, "{} h", secs / 3600),
                m => write!(f, "{} h {m} min", secs / 3600),
            },
        }
    }
}

impl std::error::Error for CircuitOpen {}

impl HasClass for CircuitOpen {
    fn class(&self) -> Class {
        let class =
            Class::new(Category::Rejected).with_retryable(self.state != BreakerState::Isolated);
        match self.retry_after {
            Some(d) => class.with_retry_after(d),
            None => class,
        }
    }
}

// ---- palisade-route ----

/// No endpoint could take the call: all are failed, ejected, cooling down, or there are none.
///
/// Its class is a retryable `ServerError` that counts against health (for a breaker above, the
/// dependency as a whole is down), with `retry_after` the soonest moment an endpoint comes back
/// by itself (an ejection, a hold for a trial or a cool-down ending),
/// when one is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoHealthyEndpoint {
    /// When the soonest endpoint comes back by itself, if any will.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for NoHealthyEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.retry_after {
            Some(d) => write!(f, "no healthy endpoint (one returns in {})", Human(d)),
            None => f.write_str("no healthy endpoint"),
        }
    }
}

impl std::error::Error for NoHealthyEndpoint {}

impl HasClass for NoHealthyEndpoint {
    fn class(&self) -> Class {
        let class = Class::new(Category::ServerError);
        match self.retry_after {
            Some(d) => class.with_retry_after(d),
            None => class,
        }
    }
}

// ---- palisade-fallback ----

/// The call failed and so did every fallback strategy tried: the call's own error, and each
/// strategy tried beside its failure, in the order tried (a fallback chain's members
/// one by one).
///
/// Displayed as `the call and 2 fallback(s) failed: 503 overloaded; service: backup down;
/// static_page: no page`. Its source is the call's own error.
///
/// Its class is the original failure's class, made not retryable: retrying the whole chain is
/// for the caller to decide, not a layer above.
#[derive(Debug)]
pub struct FallbackFailed {
    original: BoxError,
    failures: Vec<(&'static str, BoxError)>,
}

impl FallbackFailed {
    /// The call's own error and each strategy's failure, by name, in the order tried.
    pub fn new(original: BoxError, failures: Vec<(&'static str, BoxError)>) -> Self {
        FallbackFailed { original, failures }
    }

    /// The call's own error, which the strategies answered for.
    pub fn original(&self) -> &BoxError {
        &self.original
    }

    /// Each strategy tried, by name, beside its failure, in the order
    /// tried.
    pub fn failures(&self) -> &[(&'static str, BoxError)] {
        &self.failures
    }

    /// Unwraps the call's own error and the strategies' failures.
    pub fn into_parts(self) -> (BoxError, Vec<(&'static str, BoxError)>) {
        (self.original, self.failures)
    }
}

impl fmt::Display for FallbackFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the call and {} fallback(s) failed: {}",
            self.failures.len(),
            self.original
        )?;
        for (name, e) in &self.failures {
            write!(f, "; {name}: {e}")?;
        }
        Ok(())
    }
}

impl Error for FallbackFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.original)
    }
}

impl HasClass for FallbackFailed {
    fn class(&self) -> Class {
        class_of(&self.original).with_retryable(false)
    }
}

// ---- palisade-retry ----

/// The final error of a request some of whose earlier attempts timed out: palisade-retry wraps
/// the error it gives up with in this when at least one attempt before the last failed with
/// [`Category::Timeout`] and the final error is not a timeout itself (which says so on its
/// own).
///
/// A timed-out attempt may have reached the other side and taken effect there (only its
/// answer was late), so a caller that must know whether a non-idempotent call may have
/// happened cannot read it from the last attempt's error alone (an HTTP 500 after a timeout
/// does not say the timed-out attempt did nothing). [`find`](Self::find) looks for this in an
/// error's chain.
///
/// It is transparent: displayed as the wrapped error, whose error it is as
/// [`source`](Error::source), and without a class of its own, so [`class_of`] reads the wrapped
/// error's class exactly as if it were not there. A `downcast_ref` on the returned error
/// itself finds this type, not the wrapped one: use [`inner`](Self::inner), or walk the
/// chain. It is made on the failure path only, after a retry: a first attempt's error, and
/// every error of a request with no timed-out attempt before its last, are returned as they
/// are.
///
/// ```
/// use palisade_core::failure::AfterTimeouts;
/// use palisade_core::{BoxError, class_of};
///
/// let last: BoxError = "HTTP 500 internal server error".into();
/// let class = class_of(&last);
/// let err: BoxError = Box::new(AfterTimeouts::new(1, last));
/// assert_eq!(err.to_string(), "HTTP 500 internal server error");
/// assert_eq!(class_of(&err), class);
/// assert_eq!(AfterTimeouts::find(&*err).map(AfterTimeouts::timeouts), Some(1));
/// ```
#[derive(Debug)]
pub struct AfterTimeouts {
    timeouts: u32,
    inner: BoxError,
}

impl AfterTimeouts {
    /// `inner`, the final error of a request `timeouts` of whose earlier attempts timed out.
    pub fn new(timeouts: u32, inner: BoxError) -> Self {
        AfterTimeouts { timeouts, inner }
    }

    /// How many attempts before the last timed out (at least 1 as palisade-retry makes it).
    pub fn timeouts(&self) -> u32 {
        self.timeouts
    }

    /// The final error, as the last attempt (or the retry layer) gave it.
    pub fn inner(&self) -> &BoxError {
        &self.inner
    }

    /// Unwraps the final error.
    pub fn into_inner(self) -> BoxError {
        self.inner
    }

    /// The first [`AfterTimeouts`] in the chain of `err`: `err` itself, then the errors below
    /// it as [`error::chain`](crate::error::chain) walks them (into a [`Classified`](crate::Classified)
    /// a classify layer above the retry wrapped it in, whose own `source()` skips it).
    pub fn find<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a AfterTimeouts> {
        crate::error::chain(err).find_map(|e| e.downcast_ref::<AfterTimeouts>())
    }
}

impl fmt::Display for AfterTimeouts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl Error for AfterTimeouts {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.inner)
    }
}

impl HasClass for AfterTimeouts {
    /// The wrapped error's class.
    fn class(&self) -> Class {
        class_of(&self.inner)
    }
}

/// The call did not reach the feature: it is off.
///
/// Its class is [`Category::Rejected`], not retryable: a refusal says nothing new about the
/// dependency (the failures that turned the feature off were counted already), and retrying
/// cannot help until the feature is back on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeatureOff {
    /// The feature's name.
    pub feature: String,
}

impl fmt::Display for FeatureOff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "feature {:?} is off", self.feature)
    }
}

impl std::error::Error for FeatureOff {}

impl HasClass for FeatureOff {
    fn class(&self) -> Class {
        // The switchboard refused to send the call: not the dependency's fault right now (so it
        // never counts against health), and retrying cannot help until the feature is back on.
        Class::new(Category::Rejected).with_retryable(false)
    }
}

// ---- palisade-chaos ----

/// A failure injected by palisade-chaos's fault layer (its `Effect::Fail`).
///
/// It carries the class the fault was configured with, so the layers above react to it as they
/// would to the real failure: [`class_of`] reads it, and it can be downcast
/// from the `BoxError` as usual.
///
/// ```
/// use palisade_core::failure::Injected;
/// use palisade_core::{Category, Class};
///
/// let err = Injected::new(Class::new(Category::ServerError));
/// assert_eq!(err.class().category, Category::ServerError);
/// assert!(err.to_string().starts_with("injected fault: server_error"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injected {
    class: Class,
}

impl Injected {
    /// An injected failure of `class`.
    pub fn new(class: Class) -> Self {
        Injected { class }
    }

    /// The class of the failure.
    pub fn class(&self) -> Class {
        self.class
    }
}

impl fmt::Display for Injected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "injected fault: {}", self.class)
    }
}

impl std::error::Error for Injected {}

impl HasClass for Injected {
    fn class(&self) -> Class {
        self.class
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BreakerState as State;

    fn open(state: State, retry_after: Option<Duration>) -> CircuitOpen {
        CircuitOpen {
            retry_after,
            state,
            breaker: "llm".into(),
        }
    }

    #[test]
    fn the_message_names_the_breaker_and_the_time_left_in_human_form() {
        let ms = |n| Some(Duration::from_millis(n));
        for (state, after, message) in [
            (State::Open, ms(480), "circuit 'llm' open, retry in 480 ms"),
            (State::Open, ms(0), "circuit 'llm' open, retry in 0 ms"),
            (State::Open, ms(999), "circuit 'llm' open, retry in 999 ms"),
            (State::Open, ms(1_000), "circuit 'llm' open, retry in 1 s"),
            (State::Open, ms(1_249), "circuit 'llm' open, retry in 1.2 s"),
            (State::Open, ms(1_250), "circuit 'llm' open, retry in 1.3 s"),
            (State::Open, ms(59_960), "circuit 'llm' open, retry in 60 s"),
            (State::Open, ms(30_000), "circuit 'llm' open, retry in 30 s"),
            (
                State::Open,
                ms(60_000),
                "circuit 'llm' open, retry in 1 min",
            ),
            (
                State::Open,
                ms(270_500),
                "circuit 'llm' open, retry in 4 min 30 s",
            ),
            (
                State::Open,
                ms(3_600_000),
                "circuit 'llm' open, retry in 1 h",
            ),
            (
                State::Open,
                ms(3_900_000),
                "circuit 'llm' open, retry in 1 h 5 min",
            ),
            (State::Open, None, "circuit 'llm' open"),
            (
                State::HalfOpen,
                ms(310),
                "circuit 'llm' open (half-open, its probes busy), retry in 310 ms",
            ),
            (
                State::Isolated,
                None,
                "circuit 'llm' open (isolated by an operator)",
            ),
            (
                State::Closed,
                None,
                "circuit 'llm' throttled (the dependency accepts too few calls)",
            ),
        ] {
            assert_eq!(open(state, after).to_string(), message);
        }
    }

    #[test]
    fn its_class_is_a_rejection_retryable_unless_isolated() {
        let class = open(State::Open, Some(Duration::from_millis(480))).class();
        assert_eq!(class.category, Category::Rejected);
        assert!(class.retryable);
        assert_eq!(class.retry_after, Some(Duration::from_millis(480)));
        assert!(!class.counts_against_health());
        let class = open(State::Isolated, None).class();
        assert_eq!(class.category, Category::Rejected);
        assert!(!class.retryable);
        assert_eq!(class.retry_after, None);
        assert!(open(State::Closed, None).class().retryable);
    }

    /// `class_of` knows every palisade failure by type, in a crate where no layer was ever
    /// built and nothing was registered, also as the source of another error.
    #[test]
    fn class_of_knows_every_own_failure_without_registration() {
        let ms = Duration::from_millis;
        let cases: Vec<(BoxError, Class)> = vec![
            (Box::new(Elapsed::new()), Class::new(Category::Timeout)),
            (
                Box::new(Elapsed::with_limit(ms(250))),
                Class::new(Category::Timeout),
            ),
            (
                Box::new(DeadlineExceeded::new()),
                Class::new(Category::Timeout).with_retryable(false),
            ),
            (
                Box::new(DeadlineExceeded::with_limit(ms(30_000))),
                Class::new(Category::Timeout).with_retryable(false),
            ),
            (
                Box::new(open(State::Open, Some(ms(480)))),
                Class::new(Category::Rejected).with_retry_after(ms(480)),
            ),
            (
                Box::new(NoHealthyEndpoint {
                    retry_after: Some(ms(1_500)),
                }),
                Class::new(Category::ServerError).with_retry_after(ms(1_500)),
            ),
            (
                Box::new(FallbackFailed::new(Box::new(Elapsed::new()), Vec::new())),
                Class::new(Category::Timeout).with_retryable(false),
            ),
            (
                Box::new(FeatureOff {
                    feature: "search".into(),
                }),
                Class::new(Category::Rejected).with_retryable(false),
            ),
            (
                Box::new(Injected::new(Class::new(Category::RateLimited))),
                Class::new(Category::RateLimited),
            ),
        ];
        for (err, class) in cases {
            assert_eq!(class_of(&err), class, "{err}");
            // Wrapped: found in the source chain.
            let wrapped: BoxError = Box::new(Wrapper(err));
            assert_eq!(class_of(&wrapped), class);
        }
    }

    #[derive(Debug)]
    struct Wrapper(BoxError);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("while calling the tool")
        }
    }

    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    /// A timeout says the limit that ran out, and a deadline the time the call was granted,
    /// in the breaker's human form; one made without a limit says only what happened.
    #[test]
    fn timeouts_say_the_limit_that_ran_out() {
        let ms = Duration::from_millis;
        for (limit, shown) in [
            (ms(10_000), "10 s"),
            (ms(250), "250 ms"),
            (ms(1_500), "1.5 s"),
            (ms(90_000), "1 min 30 s"),
            (Duration::ZERO, "0 ms"),
            (Duration::from_micros(750), "750 µs"),
            (Duration::from_nanos(40), "40 ns"),
        ] {
            let elapsed = Elapsed::with_limit(limit);
            assert_eq!(
                elapsed.to_string(),
                format!("attempt timed out after {shown}")
            );
            assert_eq!(elapsed.limit(), Some(limit));
            let exceeded = DeadlineExceeded::with_limit(limit);
            assert_eq!(
                exceeded.to_string(),
                format!("deadline of {shown} exceeded")
            );
            assert_eq!(exceeded.limit(), Some(limit));
        }
        assert_eq!(Elapsed::new().to_string(), "attempt timed out");
        assert_eq!(Elapsed::new().limit(), None);
        assert_eq!(Elapsed::default(), Elapsed::new());
        assert_eq!(DeadlineExceeded::new().to_string(), "deadline exceeded");
        assert_eq!(DeadlineExceeded::new().limit(), None);
        assert_eq!(DeadlineExceeded::default(), DeadlineExceeded::new());
        assert_eq!(
            format!("{:?}", Elapsed::with_limit(ms(10_000))),
            "Elapsed { limit: Some(10s) }"
        );
        assert_eq!(
            format!("{:?}", DeadlineExceeded::with_limit(ms(30_000))),
            "DeadlineExceeded { limit: Some(30s) }"
        );
    }

    #[test]
    fn messages_say_who_and_how_long_in_human_form() {
        let none = NoHealthyEndpoint {
            retry_after: Some(Duration::from_millis(2_500)),
        };
        assert_eq!(
            none.to_string(),
            "no healthy endpoint (one returns in 2.5 s)"
        );
        assert_eq!(
            FeatureOff {
                feature: "search".into()
            }
            .to_string(),
            "feature \"search\" is off"
        );
    }
    #[test]
    fn fallback_failed_lists_every_failure_in_order_with_the_call_s_own_as_source() {
        let failed = FallbackFailed::new(
            "503 overloaded".into(),
            vec![
                ("service", "backup down".into()),
                ("static_page", "no page".into()),
            ],
        );
        assert_eq!(
            failed.to_string(),
            "the call and 2 fallback(s) failed: 503 overloaded; service: backup down; \
             static_page: no page"
        );
        let names: Vec<(&str, String)> = failed
            .failures()
            .iter()
            .map(|(name, e)| (*name, e.to_string()))
            .collect();
        assert_eq!(
            names,
            [
                ("service", "backup down".to_owned()),
                ("static_page", "no page".to_owned())
            ]
        );
        assert_eq!(failed.original().to_string(), "503 overloaded");
        assert_eq!(
            failed.source().map(ToString::to_string).as_deref(),
            Some("503 overloaded")
        );
        let (original, failures) = failed.into_parts();
        assert_eq!(
            (original.to_string(), failures.len()),
            ("503 overloaded".to_owned(), 2)
        );
    }
}
