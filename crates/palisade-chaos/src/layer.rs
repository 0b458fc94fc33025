//! [`ChaosLayer`] and its builder: the faults, the capacities, and the state their services share.

use std::fmt;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use palisade_core::{Class, ConfigError};
use tokio::time::Instant;
use tower_layer::Layer;

use crate::bucket::Clock;
use crate::handle::{ChaosHandle, Shared, bump};
use crate::rng::Draws;
use crate::{Capacity, Chaos, Effect, Fault};

/// The faults and capacities of a layer, fixed when it is built.
pub(crate) struct Config<Res> {
    pub(crate) faults: Vec<Fault<Res>>,
    pub(crate) capacities: Vec<Capacity<Res>>,
    pub(crate) seed: u64,
    pub(crate) epoch: Instant,
    /// The earlier of the epoch and the instant the layer was built: the capacities' buckets
    /// keep time from here (see [`Clock`]).
    pub(crate) origin: Instant,
}

impl<Res> fmt::Debug for Config<Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("faults", &self.faults)
            .field("capacities", &self.capacities)
            .field("seed", &self.seed)
            .field("epoch", &self.epoch)
            .field("origin", &self.origin)
            .finish()
    }
}

/// What happens to one call.
pub(crate) enum Decision<Res> {
    /// Straight to the inner service.
    Pass,
    /// Wait, then the inner service.
    Delay(Duration),
    /// Wait, then fail with this class.
    Fail(Class, Duration),
    /// Wait, then answer with this response.
    Respond(Res, Duration),
    /// Never answer.
    Hang,
}

impl<Res> Config<Res> {
    /// Decides the fate of a call made at `now`, and whether a capacity refused
    /// it; [`Decision::record`] counts both, once the decision is carried out (a disable in
    /// between passes the call on, counted nowhere).
    pub(crate) fn decide(&self, shared: &Shared, now: Instant) -> (Decision<Res>, bool) {
        let since = now.saturating_duration_since(self.epoch);
        let clock = Clock {
            now: now.saturating_duration_since(self.origin),
            lead: self.epoch.saturating_duration_since(self.origin),
        };
        let mut draws = Draws::new(self.seed, &shared.draws);
        let mut delay = Duration::ZERO;
        let mut decision = None;
        // A call beyond several capacities (each delaying it) counts once.
        let mut over = false;
        for (capacity, bucket) in self.capacities.iter().zip(&shared.buckets) {
            if !capacity.schedule.contains(since) {
                continue;
            }
            let admitted = bucket
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .try_take(&capacity.rate, capacity.burst, clock);
            if !admitted {
                over = true;
                decision = apply(&capacity.over, None, &mut draws, &mut delay);
                if decision.is_some() {
                    break;
                }
            }
        }
        if decision.is_none() {
            for fault in &self.faults {
                if fault.schedule.contains(since) && draws.hit(fault.rate) {
                    decision = apply(&fault.effect, fault.after.as_ref(), &mut draws, &mut delay);
                    if decision.is_some() {
                        break;
                    }
                }
            }
        }
        let decision = decision.unwrap_or(if delay.is_zero() {
            Decision::Pass
        } else {
            Decision::Delay(delay)
        });
        (decision, over)
    }
}

impl<Res> Decision<Res> {
    /// Whether the call waits before its outcome: a delay, a hang, or an outcome after a wait.
    /// Such a call is held in its future, where a disable can end the wait.
    pub(crate) fn waits(&self) -> bool {
        match self {
            Decision::Pass => false,
            Decision::Delay(_) | Decision::Hang => true,
            Decision::Fail(_, wait) | Decision::Respond(_, wait) => !wait.is_zero(),
        }
    }

    /// Counts the call under its outcome, and under `over_capacity` if `over` (a call beyond
    /// several capacities counts once).
    pub(crate) fn record(&self, shared: &Shared, over: bool) {
        if over {
            bump(&shared.over_capacity);
        }
        match self {
            Decision::Pass => {}
            Decision::Delay(d) => {
                bump(&shared.delayed);
                tracing::trace!(delay = ?d, "chaos: delaying call");
            }
            Decision::Fail(class, d) => {
                bump(&shared.failed);
                tracing::trace!(%class, after = ?d, "chaos: failing call");
            }
            Decision::Respond(_, d) => {
                bump(&shared.responded);
                tracing::trace!(after = ?d, "chaos: answering call");
            }
            Decision::Hang => {
                bump(&shared.hung);
                tracing::trace!("chaos: hanging call");
            }
        }
    }
}

/// Applies one effect: latency adds up and lets the search go on; the others end it.
fn apply<Res>(
    effect: &Effect<Res>,
    after: Option<&crate::Latency>,
    draws: &mut Draws<'_>,
    delay: &mut Duration,
) -> Option<Decision<Res>> {
    let mut wait = || match after {
        Some(latency) => delay.saturating_add(latency.sample(draws)),
        None => *delay,
    };
    match effect {
        Effect::Delay(latency) => {
            *delay = delay.saturating_add(latency.sample(draws));
            None
        }
        Effect::Fail(class) => Some(Decision::Fail(*class, wait())),
        Effect::Respond(f) => {
            let wait = wait();
            Some(Decision::Respond(f(), wait))
        }
        Effect::Hang => Some(Decision::Hang),
    }
}

/// Injects faults into the calls of the services it wraps: failures, canned responses,
/// latency, hangs and capacity limits, on schedules, at seeded rates.
///
/// Every clone of the layer and every service it makes share one state: one
/// [`ChaosHandle`] switch, one set of counters, one token bucket per capacity and one random
/// sequence. Build it with [`ChaosLayer::builder`].
pub struct ChaosLayer<Res> {
    pub(crate) config: Arc<Config<Res>>,
    pub(crate) shared: Arc<Shared>,
}

impl<Res> Clone for ChaosLayer<Res> {
    fn clone(&self) -> Self {
        ChaosLayer {
            config: self.config.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<Res> fmt::Debug for ChaosLayer<Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosLayer")
            .field("config", &self.config)
            .field("enabled", &self.shared.is_enabled())
            .finish()
    }
}

impl<Res> ChaosLayer<Res> {
    /// A builder with no faults, no capacities, seed 0, enabled.
    pub fn builder() -> ChaosBuilder<Res> {
        ChaosBuilder {
            faults: Vec::new(),
            capacities: Vec::new(),
            seed: 0,
            epoch: None,
            enabled: true,
        }
    }

    /// The handle that switches injection and reads the counters.
    pub fn handle(&self) -> ChaosHandle {
        ChaosHandle {
            shared: self.shared.clone(),
        }
    }

    /// The instant schedules and capacity ramps count from.
    pub fn epoch(&self) -> Instant {
        self.config.epoch
    }
}

impl<S, Res> Layer<S> for ChaosLayer<Res> {
    type Service = Chaos<S, Res>;

    fn layer(&self, inner: S) -> Chaos<S, Res> {
        Chaos::new(inner, self.clone())
    }
}

/// Configures a [`ChaosLayer`].
pub struct ChaosBuilder<Res> {
    faults: Vec<Fault<Res>>,
    capacities: Vec<Capacity<Res>>,
    seed: u64,
    epoch: Option<Instant>,
    enabled: bool,
}

impl<Res> fmt::Debug for ChaosBuilder<Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaosBuilder")
            .field("faults", &self.faults)
            .field("capacities", &self.capacities)
            .field("seed", &self.seed)
            .field("epoch", &self.epoch)
            .field("enabled", &self.enabled)
            .finish()
    }
}

impl<Res> ChaosBuilder<Res> {
    /// Adds a fault. Faults are checked in the order they were added: the first whose schedule
    /// covers the call and whose rate hits it decides the call, except that
    /// [`Effect::Delay`] faults add their latency and let the search go on.
    pub fn fault(mut self, fault: Fault<Res>) -> Self {
        self.faults.push(fault);
        self
    }

    /// Adds a capacity. Capacities are checked, in order, before the faults; a call over one
    /// gets its `over` effect (a delay adds up and the search goes on).
    pub fn capacity(mut self, capacity: Capacity<Res>) -> Self {
        self.capacities.push(capacity);
        self
    }

    /// The seed of the random numbers behind rates and random latencies (default 0). For a
    /// given seed, the same sequence of calls at the same instants gets the same faults.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The instant schedules and ramps count from (default: when [`build`](Self::build) runs).
    /// Before an epoch in the future, schedules read it as the epoch itself, and capacities
    /// admit the rate they start with.
    pub fn epoch(mut self, epoch: Instant) -> Self {
        self.epoch = Some(epoch);
        self
    }

    /// Whether injection starts on (default `true`); switch it later with the
    /// [`ChaosHandle`].
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Builds the layer.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid field and the rule it breaks, such as
    /// `faults[0].rate` for a rate outside `0..=1`, `capacities[1].per_second` for a negative,
    /// infinite or NaN capacity, `faults[0].latency.min` for a uniform latency whose minimum exceeds its
    /// maximum, or a [`Schedule`](crate::Schedule) that can never apply:
    /// `faults[2].schedule.start` for a window that does not end after it starts,
    /// `faults[0].schedule.windows` for an empty list of windows.
    pub fn build(self) -> Result<ChaosLayer<Res>, ConfigError> {
        for (i, fault) in self.faults.iter().enumerate() {
            fault.validate(&format!("faults[{i}]"))?;
        }
        for (i, capacity) in self.capacities.iter().enumerate() {
            capacity.validate(&format!("capacities[{i}]"))?;
        }
        let shared = Shared::new(self.enabled, self.capacities.len());
        let built = Instant::now();
        let epoch = self.epoch.unwrap_or(built);
        Ok(ChaosLayer {
            config: Arc::new(Config {
                faults: self.faults,
                capacities: self.capacities,
                seed: self.seed,
                epoch,
                origin: epoch.min(built),
            }),
            shared: Arc::new(shared),
        })
    }
}
