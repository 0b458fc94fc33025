//! The breaker's error.

use std::fmt;
use std::time::Duration;

use palisade_classify::{Category, Class, HasClass};

use crate::State;

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
/// [`Throttle`](crate::Throttle) refused the call (`state` is then `Closed`): a retry of a
/// throttled call is an ordinary retry, within the retry budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircuitOpen {
    /// How long until the breaker probes again, when known.
    pub retry_after: Option<Duration>,
    /// The state that rejected the call.
    pub state: State,
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.state, self.retry_after) {
            (State::Isolated, _) => f.write_str("circuit open (isolated)"),
            (State::HalfOpen, _) => f.write_str("circuit open (half-open, probes busy)"),
            (State::Closed, _) => {
                f.write_str("circuit throttled (the dependency accepts too few calls)")
            }
            (_, Some(d)) => write!(f, "circuit open (retry after {d:?})"),
            (_, None) => f.write_str("circuit open"),
        }
    }
}

impl std::error::Error for CircuitOpen {}

impl HasClass for CircuitOpen {
    fn class(&self) -> Class {
        let class = Class::new(Category::Rejected).with_retryable(self.state != State::Isolated);
        match self.retry_after {
            Some(d) => class.with_retry_after(d),
            None => class,
        }
    }
}
