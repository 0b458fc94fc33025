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
    /// One upstream fails every call (a retryable 503), on every replica it has, for a while,
    /// then recovers.
    Outage,
    /// Three replicas; one fails every call for a while, then comes back.
    BadReplica,
    /// The provider serves a fixed number of calls per second and answers the rest with a 429
    /// and a `retry-after-ms` hint; clients send more than that. The limit is the fault: by
    /// default it lasts the whole run (and the unmeasured traffic after it); `--fault-len`
    /// shortens it, and calls are unlimited after it.
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

    /// Whether the fault hits a place (the first replica; every replica in `outage`), whose
    /// traffic "time to detect" and "share to the bad endpoint" watch; not when it hits a
    /// capacity or a share of calls. [`Scenario::bad_replicas`] says which replicas.
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
            clients: None,
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

/// `flapping`: how long each down phase lasts.
pub const FLAP_DOWN: Duration = secs(2);

/// `flapping`: how long each up phase lasts.
pub const FLAP_UP: Duration = secs(2);

/// The most requests one run may send (measured and trailing).
const MAX_REQUESTS: f64 = 5_000_000.0;

/// The most clients a closed-loop run may have.
pub const MAX_CLIENTS: usize = 10_000;

/// The longest any of a scenario's durations may be (the run, the fault, the ramp, the hint,
/// the deadline, the attempt timeout): an hour.
pub const MAX_LENGTH: Duration = HOUR;

const HOUR: Duration = Duration::from_secs(3600);

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A scenario's parameters. All but [`fault_start`](Self::fault_start),
/// [`latency`](Self::latency) and [`noise`](Self::noise) can be set from the command line
/// (`--rate`, `--duration`, `--fault-len`, …); those three keep each scenario's default there
/// and are set only from code (the health monitor's runs set the noise).
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
    /// `rate-limit`: calls per second each replica serves; `brownout`: the capacity each
    /// replica reaches at the end of the ramp.
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
    /// Closed-loop traffic instead of open-loop: this many clients, each sending its next
    /// request only once its previous one has its answer (or gave up at its deadline), and no
    /// sooner than `clients / rate` seconds after it, as an agent that calls its dependency
    /// from a loop does. `None` (the default): open loop, each request at its time whatever
    /// happened to the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clients: Option<usize>,
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
        if self.duration.is_zero() || self.duration > HOUR {
            return Err(ConfigError::new(
                "duration",
                "must be above 0 and at most an hour",
            ));
        }
        // The run measures the requests due before its end, `rate × duration` rounded up:
        // below one request's worth, every figure would rest on the single request sent at
        // its start.
        if self.rate * self.duration.as_secs_f64() < 1.0 {
            return Err(ConfigError::new(
                "rate",
                "times the run's duration must be at least 1 (--rate × --duration ≥ 1): \
                 the run must send at least one measured request",
            ));
        }
        if self.fault_start > self.duration {
            return Err(ConfigError::new(
                "duration",
                format!(
                    "must reach the fault's start ({} s)",
                    self.fault_start.as_secs_f64()
                ),
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
        if let Some(clients) = self.clients
            && !(1..=MAX_CLIENTS).contains(&clients)
        {
            return Err(ConfigError::new(
                "clients",
                format!("must be between 1 and {MAX_CLIENTS}"),
            ));
        }
        for (field, value) in [
            ("deadline", self.deadline),
            ("attempt_timeout", self.attempt_timeout),
            ("latency", self.latency),
        ] {
            if value.is_zero() || value > HOUR {
                return Err(ConfigError::new(
                    field,
                    "must be above 0 and at most an hour",
                ));
            }
        }
        for (field, value) in [
            ("fault_len", self.fault_len),
            ("ramp", self.ramp),
            ("hint", self.hint),
        ] {
            if value > HOUR {
                return Err(ConfigError::new(field, "must be at most an hour"));
            }
        }
        // Every request sent, measured or trailing, is a task with its own record: bound
        // them so that a run fits in memory (about a kilobyte each) and finishes in minutes.
        let sent = self.rate * (self.duration + self.deadline).as_secs_f64();
        if sent > MAX_REQUESTS {
            return Err(ConfigError::new(
                "rate",
                "times the run's duration plus one deadline must be at most 5000000 requests",
            ));
        }
        if self.attempt_timeout > self.deadline {
            return Err(ConfigError::new(
                "attempt_timeout",
                "must be at most the deadline (an attempt cannot outlast its request)",
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

    /// Checks that the parameters describe a run of this scenario that can happen: those of
    /// [`Params::validate`], and where one replica fails (`bad-replica`, `latency-spike`,
    /// `failover`) at least one more to take its traffic.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first parameter that breaks its rule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.params.validate()?;
        let multi = matches!(
            self.kind,
            ScenarioKind::BadReplica | ScenarioKind::LatencySpike | ScenarioKind::Failover
        );
        if multi && self.params.replicas < 2 {
            return Err(ConfigError::new(
                "replicas",
                format!(
                    "must be at least 2 in {}: one replica fails and another takes its traffic",
                    self.kind
                ),
            ));
        }
        Ok(())
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

    /// When the fault would end, if that is after the run's end: the run then measures nothing
    /// after the fault, and no recovery (`--duration` longer than this shows them).
    pub fn fault_outlasts_run(&self) -> Option<Duration> {
        let p = &self.params;
        let end = match self.kind {
            ScenarioKind::Brownout => self.ramp().1,
            _ => p.fault_start + p.fault_len,
        };
        (end > p.duration).then_some(end)
    }

    /// Whether the fault strikes each call on its own, at rates that depend neither on who
    /// sends the call nor on what came before it (`degraded`: a hang, a 429 and a 503 drawn
    /// for each call). A call made during such a fault answers with the same chance whichever
    /// stack makes it, so answers cost calls at a price one run can measure
    /// ([`goals`](crate::goals) uses it to show which goals no stack could meet together).
    pub fn faults_each_call_alone(&self) -> bool {
        self.kind == ScenarioKind::Degraded
    }

    /// Whether the run has a fault in it: a [`fault_window`](Self::fault_window) of some
    /// length (`--fault-len 0` gives none).
    pub fn has_fault(&self) -> bool {
        let (start, end) = self.fault_window();
        start < end
    }

    /// `brownout`: when capacity returns, `[start, end)` since the run's start: from the end of
    /// the outage, for `ramp`.
    pub fn ramp(&self) -> (Duration, Duration) {
        let p = &self.params;
        let start = p.fault_start + p.fault_len;
        (start, start + p.ramp)
    }

    /// When the upstream is whole again, if that happens within the run and a second before
    /// its end at the latest (the recovery is timed over the 1 s windows that follow it): the
    /// recovery time is measured from here.
    pub fn recovery_at(&self) -> Option<Duration> {
        let (_, end) = self.fault_window();
        let at = match self.kind {
            ScenarioKind::RateLimit | ScenarioKind::Degraded => None,
            // Brownout: capacity is back once the ramp has passed the request rate.
            ScenarioKind::Brownout => {
                let p = &self.params;
                let share = (p.rate / self.total_capacity().max(f64::MIN_POSITIVE)).min(1.0);
                Some(self.ramp().0 + p.ramp.mul_f64(share))
            }
            _ => Some(end),
        };
        at.filter(|&at| at + secs(1) <= self.params.duration)
    }

    /// `flapping`: how long the upstream is down within the run. From the fault's start it is
    /// down [`FLAP_DOWN`], then up [`FLAP_UP`], and so on until the fault ends, starting down:
    /// a fault that ends in a down phase has one more down phase than up ones.
    pub fn flapping_down(&self) -> Duration {
        let (start, end) = self.fault_window();
        let len = end.saturating_sub(start);
        let period = FLAP_DOWN + FLAP_UP;
        let cycles = len.as_nanos() / period.as_nanos();
        let rest = len - Duration::from_nanos((cycles * period.as_nanos()) as u64);
        Duration::from_nanos((cycles * FLAP_DOWN.as_nanos()) as u64) + rest.min(FLAP_DOWN)
    }

    /// The replicas the fault hits in place: the first one in `bad-replica`,
    /// `latency-spike` and `failover`; all of them in `outage` (the upstream is down, however
    /// many replicas it has); none where it hits a capacity or a share of calls.
    pub fn bad_replicas(&self) -> std::ops::Range<usize> {
        match self.kind {
            ScenarioKind::Outage => 0..self.params.replicas,
            kind if kind.bad_replicas().is_empty() => 0..0,
            _ => 0..1,
        }
    }

    /// Each replica's priority tier (the standby of `failover` is in tier 1).
    pub fn tier(&self, replica: usize) -> u8 {
        match self.kind {
            ScenarioKind::Failover if replica > 0 => 1,
            _ => 0,
        }
    }

    /// The calls per second the upstream can serve at `t`, all its replicas together (for
    /// "served against what the capacity allowed"); `None` when capacity is not what limits
    /// it.
    pub fn capacity_at(&self, t: Duration) -> Option<f64> {
        let p = &self.params;
        let each = match self.kind {
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
            // The limit holds during the fault only; outside it, calls are unlimited.
            ScenarioKind::RateLimit => Some(if t >= p.fault_start && t < self.limit_end() {
                p.capacity
            } else {
                f64::INFINITY
            }),
            _ => None,
        };
        each.map(|c| c * p.replicas as f64)
    }

    /// `rate-limit`: when the limit ends, since the run's start: at the fault's end, or never
    /// where the fault lasts to the run's end (the limit then goes on through the unmeasured
    /// traffic after the run, so that the last requests' retries still meet it).
    fn limit_end(&self) -> Duration {
        let p = &self.params;
        let end = p.fault_start + p.fault_len;
        if end >= p.duration {
            Duration::MAX
        } else {
            end
        }
    }

    /// `rate-limit`: the calls the limit admits at once when it starts (at the fault's start),
    /// all its replicas together, on top of its rate: each replica's token bucket starts full,
    /// with palisade-chaos's default burst (a tenth of a second of calls, rounded up, at least
    /// 1 while the limit is above zero). None (0) in a run without a fault, which has no
    /// limit.
    pub fn limit_burst(&self) -> f64 {
        let p = &self.params;
        let each = if p.capacity > 0.0 && self.has_fault() {
            (p.capacity / 10.0).ceil().max(1.0)
        } else {
            0.0
        };
        each * p.replicas as f64
    }

    /// The calls per second the upstream serves once its capacity is whole, all its replicas
    /// together: [`Params::capacity`] times the replicas.
    pub fn total_capacity(&self) -> f64 {
        self.params.capacity * self.params.replicas as f64
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
        // A fault of no length (`--fault-len 0`, `--ramp 0`) is left out: its window would be
        // empty, which chaos refuses as a schedule that never applies.
        let faulty = start < end;
        match (self.kind, replica) {
            _ if !faulty && self.kind != ScenarioKind::Brownout => {}
            (ScenarioKind::Outage, _) | (ScenarioKind::BadReplica | ScenarioKind::Failover, 0) => {
                chaos = chaos.fault(Fault::fail(unavailable).during(Schedule::window(start, end)));
            }
            (ScenarioKind::RateLimit, _) => {
                let over = Class::new(Category::RateLimited).with_retry_after(p.hint);
                chaos = chaos.capacity(
                    Capacity::fixed(p.capacity, Effect::Fail(over))
                        .during(Schedule::window(start, self.limit_end())),
                );
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
                chaos = chaos.fault(
                    Fault::fail(unavailable)
                        .during(Schedule::flapping(start, end, FLAP_DOWN, FLAP_UP)),
                );
            }
            (ScenarioKind::Brownout, _) => {
                let (ramp_start, ramp_end) = self.ramp();
                if start < ramp_start {
                    chaos = chaos.fault(
                        Fault::fail(unavailable).during(Schedule::window(start, ramp_start)),
                    );
                }
                if ramp_start < ramp_end {
                    chaos = chaos.capacity(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scenario_is_found_by_the_name_it_prints() {
        for kind in ScenarioKind::ALL {
            assert_eq!(ScenarioKind::from_name(kind.name()), Some(kind));
            assert_eq!(kind.to_string(), kind.name());
        }
        assert_eq!(ScenarioKind::BadReplica.to_string(), "bad-replica");
        assert_eq!(ScenarioKind::from_name(""), None);
        assert_eq!(ScenarioKind::from_name("Outage"), None);
    }

    #[test]
    fn the_defaults_are_valid_and_each_limit_is_where_its_message_says() {
        for kind in ScenarioKind::ALL {
            kind.defaults().validate().unwrap();
        }
        let field = |change: &dyn Fn(&mut Params)| {
            let mut p = ScenarioKind::Outage.defaults();
            change(&mut p);
            p.validate().err().map(|e| e.field().to_owned())
        };
        let none = None::<String>;
        let is = |name: &str| Some(name.to_owned());
        // rate: above 0, at most 100000, a number.
        assert_eq!(field(&|p| p.rate = 0.0), is("rate"));
        // rate × duration: at least one measured request (the run is 40 s).
        assert_eq!(field(&|p| p.rate = 1e-9), is("rate"));
        assert_eq!(field(&|p| p.rate = 0.02), is("rate"), "0.8 requests");
        assert_eq!(field(&|p| p.rate = 0.025), none, "1 request");
        let mut few = ScenarioKind::Outage.defaults();
        few.rate = 0.01;
        let e = few.validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid configuration: `rate` times the run's duration must be at least 1 \
             (--rate × --duration ≥ 1): the run must send at least one measured request"
        );
        assert_eq!(field(&|p| p.rate = 100_000.0), none);
        assert_eq!(field(&|p| p.rate = 100_000.5), is("rate"));
        assert_eq!(field(&|p| p.rate = f64::NAN), is("rate"));
        assert_eq!(field(&|p| p.rate = f64::INFINITY), is("rate"));
        // duration: above 0, at most an hour.
        assert_eq!(field(&|p| p.duration = Duration::ZERO), is("duration"));
        assert_eq!(field(&|p| p.duration = secs(3600)), none);
        assert_eq!(
            field(&|p| p.duration = secs(3600) + Duration::from_millis(1)),
            is("duration")
        );
        // duration: reaching the fault's start.
        assert_eq!(field(&|p| p.fault_start = p.duration), none);
        assert_eq!(
            field(&|p| p.fault_start = p.duration + Duration::from_millis(1)),
            is("duration")
        );
        // rate × (duration + deadline): at most 5 000 000 requests.
        assert_eq!(
            field(&|p| p.rate = 100_000.0),
            none,
            "40 s + 10 s at 100 000/s"
        );
        assert_eq!(
            field(&|p| {
                p.rate = 100_000.0;
                p.duration = secs(41);
            }),
            is("rate")
        );
        assert_eq!(field(&|p| p.duration = secs(3600)), none, "at 100/s");
        // replicas: 1 to 64.
        assert_eq!(field(&|p| p.replicas = 0), is("replicas"));
        assert_eq!(field(&|p| p.replicas = 64), none);
        assert_eq!(field(&|p| p.replicas = 65), is("replicas"));
        // capacity: a number, at least 0.
        assert_eq!(field(&|p| p.capacity = -0.5), is("capacity"));
        assert_eq!(field(&|p| p.capacity = f64::NAN), is("capacity"));
        assert_eq!(field(&|p| p.capacity = f64::INFINITY), is("capacity"));
        // noise: a share.
        assert_eq!(field(&|p| p.noise = 1.0), none);
        assert_eq!(field(&|p| p.noise = 1.5), is("noise"));
        assert_eq!(field(&|p| p.noise = -0.1), is("noise"));
        // clients: a count, when closed loop.
        assert_eq!(field(&|p| p.clients = Some(1)), none);
        assert_eq!(field(&|p| p.clients = Some(MAX_CLIENTS)), none);
        assert_eq!(field(&|p| p.clients = Some(0)), is("clients"));
        assert_eq!(field(&|p| p.clients = Some(MAX_CLIENTS + 1)), is("clients"));
        // deadline, attempt timeout and latency: each above 0 and at most an hour.
        let over = secs(3600) + Duration::from_millis(1);
        assert_eq!(field(&|p| p.deadline = Duration::ZERO), is("deadline"));
        assert_eq!(
            field(&|p| p.attempt_timeout = Duration::ZERO),
            is("attempt_timeout")
        );
        assert_eq!(field(&|p| p.latency = Duration::ZERO), is("latency"));
        assert_eq!(field(&|p| p.latency = secs(3600)), none);
        assert_eq!(field(&|p| p.latency = over), is("latency"));
        assert_eq!(field(&|p| p.deadline = over), is("deadline"));
        // fault length, ramp and hint: at most an hour (0 is a fault or a wait of none).
        for (name, set) in [
            (
                "fault_len",
                &(|p: &mut Params, d| p.fault_len = d) as &dyn Fn(&mut Params, Duration),
            ),
            ("ramp", &|p: &mut Params, d| p.ramp = d),
            ("hint", &|p: &mut Params, d| p.hint = d),
        ] {
            assert_eq!(field(&|p| set(p, Duration::ZERO)), none, "{name}");
            assert_eq!(field(&|p| set(p, secs(3600))), none, "{name}");
            assert_eq!(field(&|p| set(p, over)), is(name), "{name}");
        }
        // the attempt timeout: at most the deadline.
        assert_eq!(field(&|p| p.attempt_timeout = p.deadline), none);
        assert_eq!(
            field(&|p| p.attempt_timeout = p.deadline + Duration::from_millis(1)),
            is("attempt_timeout")
        );
        assert_eq!(
            field(&|p| {
                p.deadline = secs(3600);
                p.attempt_timeout = secs(3600);
            }),
            none
        );
    }

    #[test]
    fn a_scenario_where_one_replica_fails_needs_another() {
        for kind in ScenarioKind::ALL {
            let mut s = Scenario::new(kind);
            s.validate().unwrap();
            s.params.replicas = 1;
            let multi = matches!(
                kind,
                ScenarioKind::BadReplica | ScenarioKind::LatencySpike | ScenarioKind::Failover
            );
            match s.validate() {
                Err(e) => {
                    assert!(multi, "{kind}: {e}");
                    assert_eq!(e.field(), "replicas");
                    assert!(e.rule().contains(&format!("at least 2 in {kind}")), "{e}");
                }
                Ok(()) => assert!(!multi, "{kind} ran with one replica"),
            }
            s.params.replicas = 2;
            s.validate().unwrap();
            // The parameters' own rules come first.
            s.params.replicas = 0;
            assert_eq!(s.validate().unwrap_err().rule(), "must be between 1 and 64");
        }
    }

    #[test]
    fn recovery_is_measured_from_the_faults_end_or_the_capacitys_return() {
        let outage = Scenario::new(ScenarioKind::Outage);
        assert_eq!(outage.recovery_at(), Some(secs(20)));
        // A fault that lasts to the end of the run has no recovery in it.
        let mut late = outage;
        late.params.fault_len = secs(30);
        assert_eq!(late.recovery_at(), None);
        for kind in [ScenarioKind::RateLimit, ScenarioKind::Degraded] {
            assert_eq!(Scenario::new(kind).recovery_at(), None, "{kind}");
        }
        // Brownout: capacity returns from 20 s to 150 calls/s over 10 s; 100 requests/s fit
        // from two thirds of the ramp.
        let mut brownout = Scenario::new(ScenarioKind::Brownout);
        let at = brownout.recovery_at().unwrap().as_secs_f64();
        assert!((at - (20.0 + 10.0 * 100.0 / 150.0)).abs() < 1e-6, "{at}");
        // A capacity below the rate is whole only at the ramp's end.
        brownout.params.capacity = 50.0;
        assert_eq!(brownout.recovery_at(), Some(secs(30)));
        // The recovery is timed over the 1 s windows that follow it: a run that ends before
        // one whole window has none to time it over.
        let mut short = Scenario::new(ScenarioKind::Outage);
        short.params.duration = Duration::from_millis(20_999);
        assert_eq!(short.recovery_at(), None);
        short.params.duration = secs(21);
        assert_eq!(short.recovery_at(), Some(secs(20)));
        brownout.params.duration = Duration::from_millis(30_999);
        assert_eq!(
            brownout.recovery_at(),
            None,
            "ends before the capacity is back"
        );
        brownout.params.duration = secs(25);
        assert_eq!(brownout.recovery_at(), None);
    }

    #[test]
    fn capacity_is_what_limits_the_upstream_and_nothing_else() {
        let brownout = Scenario::new(ScenarioKind::Brownout);
        let at = |s: f64| brownout.capacity_at(Duration::from_secs_f64(s)).unwrap();
        assert_eq!(at(9.9), f64::INFINITY, "before the outage");
        assert_eq!(at(10.0), 0.0, "the outage");
        assert_eq!(at(19.9), 0.0);
        assert_eq!(at(20.0), 0.0, "the ramp starts from nothing");
        assert!((at(25.0) - 75.0).abs() < 1e-9, "{}", at(25.0));
        assert_eq!(at(30.0), f64::INFINITY, "the ramp is over");
        let mut limited = Scenario::new(ScenarioKind::RateLimit);
        assert_eq!(limited.capacity_at(secs(3)), Some(50.0));
        // Each replica has the capacity: the upstream, all of them.
        limited.params.replicas = 3;
        assert_eq!(limited.capacity_at(secs(3)), Some(150.0));
        assert_eq!(limited.total_capacity(), 150.0);
        let mut two = brownout.clone();
        two.params.replicas = 2;
        let at = |s: f64| two.capacity_at(Duration::from_secs_f64(s)).unwrap();
        assert!((at(25.0) - 150.0).abs() < 1e-9, "{}", at(25.0));
        // Two replicas returning to 150 each pass the 100 requests a second a third of the
        // way up the ramp.
        assert_eq!(
            two.recovery_at().unwrap().as_millis(),
            20_000 + 10_000 / 3,
            "{:?}",
            two.recovery_at()
        );
        assert_eq!(
            Scenario::new(ScenarioKind::Outage).capacity_at(secs(15)),
            None
        );
    }

    /// The rate limit is the scenario's fault: it holds from the fault's start for its length
    /// (to the run's end and past it by default), and a run without a fault has none.
    #[test]
    fn the_rate_limit_holds_while_its_fault_lasts() {
        let mut limited = Scenario::new(ScenarioKind::RateLimit);
        assert_eq!(
            limited.limit_end(),
            Duration::MAX,
            "the whole run, and after it"
        );
        assert_eq!(limited.capacity_at(secs(39)), Some(50.0));
        assert_eq!(limited.limit_burst(), 5.0);
        limited.params.fault_len = secs(10);
        assert_eq!(limited.limit_end(), secs(10));
        assert_eq!(limited.capacity_at(secs(0)), Some(50.0));
        assert_eq!(
            limited.capacity_at(Duration::from_millis(9_999)),
            Some(50.0)
        );
        assert_eq!(limited.capacity_at(secs(10)), Some(f64::INFINITY));
        assert_eq!(limited.limit_burst(), 5.0);
        limited.params.fault_len = Duration::ZERO;
        assert_eq!(limited.capacity_at(secs(0)), Some(f64::INFINITY));
        assert_eq!(limited.limit_burst(), 0.0, "no limit, no burst");
        // The chaos layer agrees: a 10 s limit refuses calls beyond it during the fault only.
        limited.params.fault_len = secs(10);
        let log = crate::run::record(&limited, crate::stack::StackKind::None).unwrap();
        let refused = |from: u64, to: u64| {
            log.attempts
                .iter()
                .filter(|a| a.at >= secs(from) && a.at < secs(to))
                .filter(|a| a.outcome != crate::record::AttemptOutcome::Ok)
                .count()
        };
        assert!(refused(0, 10) > 250, "{}", refused(0, 10));
        assert_eq!(refused(10, 50), 0);
    }

    #[test]
    fn the_standby_is_the_failover_scenarios_second_tier_only() {
        let failover = Scenario::new(ScenarioKind::Failover);
        assert_eq!(
            [failover.tier(0), failover.tier(1), failover.tier(2)],
            [0, 1, 1]
        );
        let spike = Scenario::new(ScenarioKind::LatencySpike);
        assert_eq!([spike.tier(0), spike.tier(1)], [0, 0]);
        assert_eq!(failover.bad_replicas(), 0..1);
        assert!(
            Scenario::new(ScenarioKind::Flapping)
                .bad_replicas()
                .is_empty()
        );
        // An outage takes the whole upstream down, however many replicas it has.
        let mut outage = Scenario::new(ScenarioKind::Outage);
        assert_eq!(outage.bad_replicas(), 0..1);
        outage.params.replicas = 3;
        assert_eq!(outage.bad_replicas(), 0..3);
    }

    /// The background noise of the health monitor's steady runs fails its share of calls, and
    /// only when asked for.
    #[test]
    fn noise_fails_its_share_of_calls() {
        let mut quiet = Scenario::new(ScenarioKind::Outage);
        quiet.params.fault_start = quiet.params.duration;
        quiet.params.fault_len = Duration::ZERO;
        let mut noisy = quiet.clone();
        noisy.params.noise = 0.05;
        let success = |s: &Scenario| {
            crate::run(s, crate::stack::StackKind::None)
                .unwrap()
                .success
        };
        assert_eq!(success(&quiet), 1.0);
        let noisy = success(&noisy);
        assert!((noisy - 0.95).abs() < 0.01, "{noisy}");
    }

    #[test]
    fn a_fault_that_outlasts_the_run_is_told() {
        // No default scenario's fault runs past its run (the rate limit lasts the whole run).
        for kind in ScenarioKind::ALL {
            assert_eq!(Scenario::new(kind).fault_outlasts_run(), None, "{kind}");
        }
        let mut outage = Scenario::new(ScenarioKind::Outage);
        outage.params.fault_len = secs(30);
        assert_eq!(
            outage.fault_outlasts_run(),
            None,
            "ends with the run: not past it"
        );
        outage.params.fault_len = secs(60);
        assert_eq!(outage.fault_outlasts_run(), Some(secs(70)));
        // The brownout's fault is its outage and its ramp.
        let mut brownout = Scenario::new(ScenarioKind::Brownout);
        let end = brownout.params.fault_start + brownout.params.fault_len + brownout.params.ramp;
        brownout.params.duration = end - secs(1);
        assert_eq!(brownout.fault_outlasts_run(), Some(end));
    }
}
