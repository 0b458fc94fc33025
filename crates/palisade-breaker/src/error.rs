//! The breaker's error.

use std::fmt;
use std::sync::Arc;
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
    pub state: State,
    /// The name of the breaker that rejected the call (for a per-key breaker, its layer's name
    /// followed by the key: `models["small"]`).
    pub breaker: Arc<str>,
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &*self.breaker;
        match self.state {
            State::Isolated => write!(f, "circuit '{name}' open (isolated by an operator)")?,
            State::HalfOpen => write!(f, "circuit '{name}' open (half-open, its probes busy)")?,
            State::Closed => write!(
                f,
                "circuit '{name}' throttled (the dependency accepts too few calls)"
            )?,
            State::Open | State::Disabled => write!(f, "circuit '{name}' open")?,
        }
        match self.retry_after {
            Some(d) => write!(f, ", retry in {}", Human(d)),
            None => Ok(()),
        }
    }
}

/// A duration as a person reads it: `480 ms`, `2.5 s`, `30 s`, `4 min 30 s`, `1 h 5 min`.
struct Human(Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        let secs = self.0.as_secs();
        match secs {
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
        let class = Class::new(Category::Rejected).with_retryable(self.state != State::Isolated);
        match self.retry_after {
            Some(d) => class.with_retry_after(d),
            None => class,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
