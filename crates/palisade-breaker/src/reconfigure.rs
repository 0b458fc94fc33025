//! What a live reconfiguration ([`BreakerHandle::reconfigure`](crate::BreakerHandle::reconfigure))
//! kept and what it could not.

use std::fmt;

use crate::{State, Window};

/// The result of [`BreakerHandle::reconfigure`](crate::BreakerHandle::reconfigure): the new
/// configuration is in force; everything it still applies to was kept, and
/// [`resets`](Self::resets) lists, with the reason, each thing that could not be.
///
/// Always kept: the state (closed, open, half-open, isolated or bypassed), the end of the
/// current open period, the re-open count behind the back-off, the failure streak, the probes
/// in flight and the successful probes so far, the counters of [`Metrics`](crate::Metrics),
/// and the listeners. The rate window and the throttle's window are kept when the new
/// configuration measures over the same window (same kind and size: a recent window's
/// `calls`, whatever its `within` and `min_calls`, which apply to its outcomes from then on).
///
/// `#[non_exhaustive]`: a field may be added.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Reconfigured {
    /// The breaker's state, kept across the reconfiguration, as
    /// [`BreakerHandle::state`](crate::BreakerHandle::state) reads it (an open breaker whose
    /// open period is over reads [`State::HalfOpen`]: its next call probes).
    pub state: State,
    /// What could not carry over, and why; empty when everything was kept.
    pub resets: Vec<Reset>,
}

impl Reconfigured {
    /// Whether everything carried over (no [`Reset`]).
    pub fn is_lossless(&self) -> bool {
        self.resets.is_empty()
    }
}

impl fmt::Display for Reconfigured {
    /// `nothing reset`, or each reset and its reason, separated by `; `.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.resets.is_empty() {
            return f.write_str("nothing reset");
        }
        for (i, reset) in self.resets.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{reset}")?;
        }
        Ok(())
    }
}

/// One thing a reconfiguration could not carry over, with why. `#[non_exhaustive]`: a case
/// may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reset {
    /// The rate window's outcomes were dropped: the new configuration measures over another
    /// window (another kind or size), so it starts with a new, empty one; or it has no rate
    /// rule any more (`to` is `None`).
    Window {
        /// The window that was dropped.
        from: Option<Window>,
        /// The new window (`None`: no rate rule, no window).
        to: Option<Window>,
        /// How many outcomes it held.
        dropped: u32,
    },
    /// The adaptive throttle's window was dropped: its size changed (a new, empty one), or
    /// the throttle was turned off (`to` is `None`).
    Throttle {
        /// The size of the window that was dropped.
        from: Option<u32>,
        /// The size of the new one (`None`: no throttle).
        to: Option<u32>,
        /// How many requests it held.
        dropped: u32,
    },
    /// More probes are in flight than the new
    /// [`half_open_probes`](crate::BreakerConfig::half_open_probes) allows: they finish as
    /// they are (each outcome counts), and no new probe is admitted until fewer than `limit`
    /// are in flight.
    ProbesOverLimit {
        /// Probes in flight when the configuration changed.
        in_flight: u32,
        /// The new limit.
        limit: u32,
    },
}

impl fmt::Display for Reset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Reset::Window {
                from,
                to: Some(to),
                dropped,
            } => write!(
                f,
                "rate window {from:?} → {to:?}: {dropped} outcomes dropped, the new window starts empty"
            ),
            Reset::Window {
                from,
                to: None,
                dropped,
            } => write!(
                f,
                "rate window {from:?} dropped with its {dropped} outcomes: no rate rule any more"
            ),
            Reset::Throttle {
                from,
                to: Some(to),
                dropped,
            } => write!(
                f,
                "throttle window {from:?} → {to}: {dropped} requests dropped, the new window starts empty"
            ),
            Reset::Throttle {
                from,
                to: None,
                dropped,
            } => write!(
                f,
                "throttle window {from:?} dropped with its {dropped} requests: throttle turned off"
            ),
            Reset::ProbesOverLimit { in_flight, limit } => write!(
                f,
                "{in_flight} probes in flight above half_open_probes = {limit}: they finish as \
                 they are, no new probe until fewer than {limit} are in flight"
            ),
        }
    }
}

#[cfg(test)]
#[cfg(not(palisade_loom))]
mod tests;
