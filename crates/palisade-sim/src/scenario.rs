//! The built-in scenarios: what fails, when, and how the upstream behaves otherwise.

use std::fmt;
use std::time::Duration;

use palisade::chaos::{Capacity, ChaosLayer, Effect, Fault, Latency, Schedule};
use palisade::classify::{Category, Class, ConfigError};
use serde::Serialize;
use tokio::time::Instant;

use crate::Reply;

/// One of the built-in scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioKind {
    /// One upstream fails every call (a retryable 503) for a while, then recovers.
    Outage,
    /// Three replicas; one fails every call for a while, then comes back.
    BadReplica,
    /// The provider serves a fixed number of calls per second and answers the rest with a 429
    /// and a `retry-after-ms` hint; clients send more than that.
    RateLimit,
    /// One of two replicas goes from its usual latency to about a hundred times that.
    LatencySpike,
    /// The upstream toggles between down and up every couple of seconds.
    Flapping,
    /// After an outage, capacity comes back gradually; calls beyond it fail.
    Brownout,
    /// The primary provider is down for a while; a standby (a second priority tier) is healthy.
    Failover,
    /// The upstream stays up but fails about half its calls with 503, rate-limits some with a
    /// 429 and a hint, and hangs now and then.
    Degraded,
}

impl ScenarioKind {
    /// Every built-in scenario, in the order the table prints them.
    pub const ALL: [ScenarioKind; 8] = [
        ScenarioKind::Outage,
        ScenarioKind::BadReplica,
        ScenarioKind::RateLimit,
        ScenarioKind::LatencySpike,
        ScenarioKind::Flapping,
        ScenarioKind::Brownout,
        ScenarioKind::Failover,
        ScenarioKind::Degraded,
    ];

    /// The scenario's name on the command line and in the output.
    pub const fn name(self) -> &'static str {
        match self {
            ScenarioKind::Outage => "outage",
            ScenarioKind::BadReplica => "bad-replica",
            ScenarioKind::RateLimit => "rate-limit",
            ScenarioKind::LatencySpike => "latency-spike",
            ScenarioKind::Flapping => "flapping",
            ScenarioKind::Brownout => "brownout",
            ScenarioKind::Failover => "failover",
            ScenarioKind::Degraded => "degraded",
        }
    }

    /// The scenario named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The replicas the fault hits, whose traffic "time to detect" and "share to the bad
    /// endpoint" watch (empty when the fault hits a capacity or a share of calls, not a place).
    pub const fn bad_replicas(self) -> &'static [usize] {
        match self {
            ScenarioKind::Outage
            | ScenarioKind::BadReplica
            | ScenarioKind::LatencySpike
            | ScenarioKind::Failover => &[0],
            _ => &[],
        }
    }

    /// The scenario's default parameters.
    pub fn defaults(self) -> Params {
        let base = Params {
            rate: 100.0,
            duration: secs(40),
            fault_start: secs(10),
            fault_len: secs(10),
            replicas: 1,
            capacity: 0.0,
            ramp: Duration::ZERO,
            latency: Duration::from_millis(50),
            deadline: secs(10),
            attempt_timeout: secs(1),
            hint: secs(1),
            seed: 1,
            noise: 0.0,
        };
        match self {
            ScenarioKind::Outage => base,
            ScenarioKind::BadReplica => Params {
                duration: secs(90),
                fault_start: secs(5),
                fault_len: secs(20),
                replicas: 3,
                ..base
            },
            ScenarioKind::RateLimit => Params {
                rate: 80.0,
                fault_start: Duration::ZERO,
                fault_len: secs(40),
                capacity: 50.0,
                ..base
            },
            ScenarioKind::LatencySpike => Params {
                replicas: 2,
                ..base
            },
            ScenarioKind::Flapping => Params {
                fault_start: secs(5),
                fault_len: secs(30),
                ..base
            },
            ScenarioKind::Brownout => Params {
                capacity: 150.0,
                ramp: secs(10),
                ..base
            },
            ScenarioKind::Failover => Params {
                fault_len: secs(20),
                replicas: 2,
                ..base
            },
            ScenarioKind::Degraded => Params {
                fault_start: secs(5),
                fault_len: secs(30),
                hint: Duration::from_millis(500),
                ..base
            },
        }
    }
}

impl fmt::Display for ScenarioKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A scenario's parameters; every one can be set from the command line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Params {
    /// Requests sent per second (open loop: each at its time, whatever happened before).
    pub rate: f64,
    /// How long the run lasts.
    #[serde(with = "ms")]
    pub duration: Duration,
    /// When the fault starts.
    #[serde(with = "ms")]
    pub fault_start: Duration,
    /// How long the fault lasts (for `brownout`, the outage before capacity returns).
    #[serde(with = "ms")]
    pub fault_len: Duration,
    /// How many replicas serve the requests.
    pub replicas: usize,
    /// `rate-limit`: calls per second the provider serves; `brownout`: the capacity reached at
    /// the end of the ramp.
    pub capacity: f64,
    /// `brownout`: how long the capacity takes to return.
    #[serde(with = "ms")]
    pub ramp: Duration,
    /// The upstream's usual latency (each call takes 80–120 % of it).
    #[serde(with = "ms")]
    pub latency: Duration,
    /// Each request's own deadline: the caller gives up after it, whatever the stack does.
    #[serde(with = "ms")]
    pub deadline: Duration,
    /// The per-attempt timeout of the stacks that have one.
    #[serde(with = "ms")]
    pub attempt_timeout: Duration,
    /// The server's retry hint on a 429.
    #[serde(with = "ms")]
    pub hint: Duration,
    /// The seed of every random choice in the run.
    pub seed: u64,
    /// A background rate of upstream failures all run long, in `0..=1` (default 0): the
    /// ordinary noise of a real dependency, for the health monitor's false-alarm rate.
    pub noise: f64,
}

impl Params {
    /// Checks that the parameters describe a run that can happen.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first parameter that breaks its rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= 100_000.0) {
            return Err(ConfigError::new(
                "rate",
                "must be above 0 and at most 100000",
            ));
        }
        if self.duration.is_zero() || self.duration > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "duration",
                "must be above 0 and at most an hour",
            ));
        }
        if self.fault_start > self.duration {
            return Err(ConfigError::new(
                "fault_start",
                "must be within the run's duration",
            ));
        }
        if self.replicas == 0 || self.replicas > 64 {
            return Err(ConfigError::new("replicas", "must be between 1 and 64"));
        }
        if !(self.capacity.is_finite() && self.capacity >= 0.0) {
            return Err(ConfigError::new("capacity", "must be a number, at least 0"));
        }
        if !(0.0..=1.0).contains(&self.noise) {
            return Err(ConfigError::new("noise", "must be within 0..=1"));
        }
        if self.deadline.is_zero() || self.attempt_timeout.is_zero() || self.latency.is_zero() {
            return Err(ConfigError::new(
                "deadline",
                "deadline, attempt_timeout and latency must be above 0",
            ));
        }
        Ok(())
    }
}

/// A scenario: its kind and its parameters.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scenario {
    /// Which scenario.
    pub kind: ScenarioKind,
    /// Its parameters.
    pub params: Params,
}

impl Scenario {
    /// The scenario with its default parameters.
    pub fn new(kind: ScenarioKind) -> Self {
        Scenario {
            kind,
            params: kind.defaults(),
        }
    }

    /// The window the "during the fault" figures are measured over, since the run's start.
    pub fn fault_window(&self) -> (Duration, Duration) {
        let p = &self.params;
        let end = match self.kind {
            ScenarioKind::Brownout => self.ramp().1,
            _ => p.fault_start + p.fault_len,
        };
        (p.fault_start, end.min(p.duration))
    }

    /// `brownout`: when capacity returns, `[start, end)` since the run's start: from the end of
    /// the outage, for `ramp`.
    pub fn ramp(&self) -> (Duration, Duration) {
        let p = &self.params;
        let start = p.fault_start + p.fault_len;
        (start, start + p.ramp)
    }

    /// When the upstream is whole again, if that happens within the run: the recovery time is
    /// measured from here.
    pub fn recovery_at(&self) -> Option<Duration> {
        let (_, end) = self.fault_window();
        match self.kind {
            ScenarioKind::RateLimit | ScenarioKind::Degraded => None,
            // Brownout: capacity is back once the ramp has passed the request rate.
            ScenarioKind::Brownout => {
                let p = &self.params;
                let share = (p.rate / p.capacity.max(f64::MIN_POSITIVE)).min(1.0);
                Some(self.ramp().0 + p.ramp.mul_f64(share))
            }
            _ => (end < self.params.duration).then_some(end),
        }
    }

    /// The replicas the fault hits: [`ScenarioKind::bad_replicas`].
    pub fn bad_replicas(&self) -> &'static [usize] {
        self.kind.bad_replicas()
    }

    /// Each replica's priority tier (the standby of `failover` is in tier 1).
    pub fn tier(&self, replica: usize) -> u8 {
        match self.kind {
            ScenarioKind::Failover if replica > 0 => 1,
            _ => 0,
        }
    }

    /// The calls per second the upstream can serve at `t` (for `brownout`'s "served against
    /// what the capacity allowed"); `None` when capacity is not what limits it.
    pub fn capacity_at(&self, t: Duration) -> Option<f64> {
        let p = &self.params;
        match self.kind {
            ScenarioKind::Brownout => {
                let (ramp_start, ramp_end) = self.ramp();
                Some(if t < p.fault_start {
                    f64::INFINITY
                } else if t < ramp_start {
                    0.0
                } else if t < ramp_end {
                    p.capacity * (t - ramp_start).as_secs_f64() / p.ramp.as_secs_f64()
                } else {
                    f64::INFINITY
                })
            }
            ScenarioKind::RateLimit => Some(p.capacity),
            _ => None,
        }
    }

    /// The fault injection of replica `replica`, its clock starting at `epoch`.
    ///
    /// # Errors
    /// A [`ConfigError`] when the parameters make an invalid fault.
    pub fn chaos(&self, replica: usize, epoch: Instant) -> Result<ChaosLayer<Reply>, ConfigError> {
        let p = &self.params;
        let (start, end) = (p.fault_start, p.fault_start + p.fault_len);
        let usual = Latency::Uniform {
            min: p.latency.mul_f64(0.8),
            max: p.latency.mul_f64(1.2),
        };
        let unavailable = Class::new(Category::ServerError);
        let mut chaos = ChaosLayer::builder()
            .seed(
                p.seed
                    .wrapping_mul(0x9e37_79b9)
                    .wrapping_add(replica as u64),
            )
            .epoch(epoch)
            .fault(Fault::delay(usual));
        if p.noise > 0.0 {
            chaos = chaos.fault(Fault::fail(unavailable).rate(p.noise));
        }
        match (self.kind, replica) {
            (ScenarioKind::Outage | ScenarioKind::BadReplica | ScenarioKind::Failover, 0) => {
                chaos = chaos.fault(Fault::fail(unavailable).during(Schedule::window(start, end)));
            }
            (ScenarioKind::RateLimit, _) => {
                let over = Class::new(Category::RateLimited).with_retry_after(p.hint);
                chaos = chaos.capacity(Capacity::fixed(p.capacity, Effect::Fail(over)));
            }
            (ScenarioKind::LatencySpike, 0) => {
                let slow = p.latency.mul_f64(100.0);
                chaos = chaos.fault(
                    Fault::delay(Latency::Uniform {
                        min: slow.mul_f64(0.8),
                        max: slow.mul_f64(1.2),
                    })
                    .during(Schedule::window(start, end)),
                );
            }
            (ScenarioKind::Flapping, _) => {
                chaos = chaos.fault(Fault::fail(unavailable).during(Schedule::flapping(
                    start,
                    end,
                    secs(2),
                    secs(2),
                )));
            }
            (ScenarioKind::Brownout, _) => {
                let (ramp_start, ramp_end) = self.ramp();
                chaos = chaos
                    .fault(Fault::fail(unavailable).during(Schedule::window(start, ramp_start)))
                    .capacity(
                        Capacity::ramp(
                            0.0,
                            p.capacity,
                            ramp_start,
                            p.ramp,
                            Effect::Fail(Class::new(Category::ResourceExhausted)),
                        )
                        .during(Schedule::window(ramp_start, ramp_end)),
                    );
            }
            (ScenarioKind::Degraded, _) => {
                let during = Schedule::window(start, end);
                let limited = Class::new(Category::RateLimited).with_retry_after(p.hint);
                chaos = chaos
                    .fault(Fault::hang().rate(0.02).during(during.clone()))
                    .fault(Fault::fail(limited).rate(0.1).during(during.clone()))
                    .fault(Fault::fail(unavailable).rate(0.5).during(during));
            }
            _ => {}
        }
        chaos.build()
    }
}

/// Durations as milliseconds in the JSON output.
pub(crate) mod ms {
    use serde::Serializer;
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }
}
