//! The stacks a scenario's traffic goes through.
//!
//! Every stack gets the same retry settings where it retries (palisade's defaults: up to 3
//! attempts, exponential backoff from 1 s, factor 2, ±10 % jitter; `naive` takes one more
//! attempt, as hand-written loops usually do) and the same per-attempt timeout where it has one.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use palisade::classify::BoxError;
use palisade::config::PresetConfig;
use palisade::preset;
use palisade::retry::{Backoff, DEFAULT_MAX_ATTEMPTS, RetryLayer};
use palisade::route::Route;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tower::retry::budget::{Budget, TpsBudget};
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

use crate::scenario::Scenario;
use crate::{Reply, Req};

/// A stack or a replica, boxed: the simulator compares stacks of different types.
pub type Client = BoxCloneSyncService<Req, Reply, BoxError>;

/// One of the built-in stacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StackKind {
    /// No protection: each request goes to the upstream once.
    None,
    /// What most hand-written code does: 3 retries with exponential backoff and jitter, no
    /// budget, no breaker, no per-attempt timeout.
    Naive,
    /// tower's own layers: `Retry` with a `TpsBudget` (10 s, 10 retries/s, 20 %) over a
    /// per-attempt `Timeout`.
    Tower,
    /// palisade's recommended preset (deadline → retry → breaker → timeout → classify), with a
    /// health-ramped router when the scenario has replicas; every setting its default but the
    /// deadline and the attempt timeout, which are the scenario's.
    Palisade,
}

impl StackKind {
    /// Every built-in stack, in the order the table prints them.
    pub const ALL: [StackKind; 4] = [
        StackKind::None,
        StackKind::Naive,
        StackKind::Tower,
        StackKind::Palisade,
    ];

    /// The stack's name on the command line and in the output.
    pub const fn name(self) -> &'static str {
        match self {
            StackKind::None => "none",
            StackKind::Naive => "naive",
            StackKind::Tower => "tower",
            StackKind::Palisade => "palisade",
        }
    }

    /// The stack named `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for StackKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The retry settings every retrying stack shares: palisade's defaults (the attempts and the
/// backoff are read from `palisade::retry`; the jitter is its default `Proportional(0.1)`).
const ATTEMPTS: u32 = DEFAULT_MAX_ATTEMPTS;
const JITTER: f64 = 0.1;

/// The configuration file the `palisade` stack is built from, when one was given.
static PALISADE_CONFIG: OnceLock<PresetConfig> = OnceLock::new();

/// Builds the `palisade` stack from `config` (a file read with
/// [`PresetConfig::from_toml_with_env`]) instead of the preset's defaults with each
/// scenario's deadline and attempt timeout, for the rest of the process: what
/// `palisade-sim --stack FILE.toml` does, so a stack tuned here ships as the same file. A
/// retry seed the file leaves out is each scenario's seed, so runs stay reproducible.
///
/// # Errors
/// If a configuration was set already (the one given is dropped).
pub fn use_palisade_config(config: PresetConfig) -> Result<(), AlreadySet> {
    PALISADE_CONFIG.set(config).map_err(|_| AlreadySet)
}

/// A stack configuration was set already: one file per process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlreadySet;

impl fmt::Display for AlreadySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("only one stack file can be given")
    }
}

impl std::error::Error for AlreadySet {}

/// The configuration the `palisade` stack is built from, if a file gave one.
pub fn palisade_config() -> Option<&'static PresetConfig> {
    PALISADE_CONFIG.get()
}

/// Builds the stack `kind` over the scenario's replicas.
///
/// # Errors
/// A configuration error from a layer.
pub fn build(
    kind: StackKind,
    scenario: &Scenario,
    replicas: Vec<Client>,
) -> Result<Client, BoxError> {
    let p = &scenario.params;
    let rng = Arc::new(Mutex::new(SmallRng::seed_from_u64(
        p.seed ^ 0x005e_ed0f_5ac4,
    )));
    Ok(match kind {
        StackKind::None => BoxCloneSyncService::new(RoundRobin::new(replicas)),
        StackKind::Naive => naive(RoundRobin::new(replicas), rng),
        StackKind::Tower => {
            let policy = TowerPolicy {
                left: ATTEMPTS - 1,
                budget: Arc::new(TpsBudget::default()),
                rng,
            };
            let svc = ServiceBuilder::new()
                .retry(policy)
                .timeout(p.attempt_timeout)
                .service(RoundRobin::new(replicas));
            BoxCloneSyncService::new(svc)
        }
        StackKind::Palisade => {
            let preset = match palisade_config() {
                Some(config) => {
                    let mut config = config.clone();
                    config.retry.seed = config.retry.seed.or(Some(p.seed));
                    config.builder()?.build()?
                }
                None => {
                    let retry = RetryLayer::builder()
                        .name("upstream")
                        .seed(p.seed)
                        .build()?;
                    preset::recommended("upstream")
                        .deadline(p.deadline)
                        .attempt_timeout(p.attempt_timeout, Some((2.0, p.deadline)))
                        .retry(retry)
                        .build()?
                }
            };
            if replicas.len() == 1 {
                let only = replicas.into_iter().next().ok_or("no replica")?;
                BoxCloneSyncService::new(preset.layer(only))
            } else {
                // Each replica in its scenario's tier, keyed by its position; a stack file's
                // `[route]` settings, if it has them (its endpoints are the scenario's replicas,
                // and the seed is the scenario's).
                let mut route = replicas
                    .into_iter()
                    .enumerate()
                    .fold(Route::builder([]), |route, (i, replica)| {
                        route.tier(scenario.tier(i), [replica])
                    });
                if let Some(config) = palisade_config().and_then(|c| c.route) {
                    route = route.config(config);
                }
                let route = route.seed(p.seed).build()?;
                BoxCloneSyncService::new(preset.layer(route))
            }
        }
    })
}

/// The replicas in turn, as DNS or a plain load balancer spreads calls over them.
#[derive(Clone, Debug)]
struct RoundRobin {
    replicas: Arc<[Client]>,
    next: Arc<AtomicUsize>,
}

impl RoundRobin {
    fn new(replicas: Vec<Client>) -> Self {
        RoundRobin {
            replicas: replicas.into(),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Service<Req> for RoundRobin {
    type Response = Reply;
    type Error = BoxError;
    type Future = tower::util::Oneshot<Client, Req>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.replicas.len();
        self.replicas[i].clone().oneshot(req)
    }
}

/// The delay before retry number `n` (from 1): exponential, ±10 % jitter.
fn backoff(n: u32, rng: &Mutex<SmallRng>) -> Duration {
    let base = Backoff::default().delay(n);
    let spread: f64 = rng
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .random_range(-JITTER..=JITTER);
    base.mul_f64(1.0 + spread)
}

fn naive(inner: RoundRobin, rng: Arc<Mutex<SmallRng>>) -> Client {
    BoxCloneSyncService::new(tower::service_fn(move |req: Req| {
        let inner = inner.clone();
        let rng = rng.clone();
        async move {
            let mut n = 0;
            loop {
                n += 1;
                match inner.clone().oneshot(req.clone()).await {
                    Ok(reply) => return Ok(reply),
                    Err(e) if n > ATTEMPTS => return Err(e),
                    Err(_) => tokio::time::sleep(backoff(n, &rng)).await,
                }
            }
        }
    }))
}

/// tower's `Retry` policy as its docs write one: retry any error while attempts and the
/// budget allow, deposit on success, back off exponentially.
#[derive(Clone, Debug)]
struct TowerPolicy {
    left: u32,
    budget: Arc<TpsBudget>,
    rng: Arc<Mutex<SmallRng>>,
}

impl tower::retry::Policy<Req, Reply, BoxError> for TowerPolicy {
    type Future = tokio::time::Sleep;

    fn retry(&mut self, _: &mut Req, result: &mut Result<Reply, BoxError>) -> Option<Self::Future> {
        match result {
            Ok(_) => {
                self.budget.deposit();
                None
            }
            Err(_) if self.left == 0 || !self.budget.withdraw() => None,
            Err(_) => {
                let n = ATTEMPTS - self.left;
                self.left -= 1;
                Some(tokio::time::sleep(backoff(n, &self.rng)))
            }
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stack_is_found_by_the_name_it_prints() {
        for kind in StackKind::ALL {
            assert_eq!(StackKind::from_name(kind.name()), Some(kind));
            assert_eq!(kind.to_string(), kind.name());
        }
        assert_eq!(StackKind::from_name("Tower"), None);
        assert_eq!(AlreadySet.to_string(), "only one stack file can be given");
    }

    #[test]
    fn the_naive_backoff_doubles_with_ten_percent_jitter() {
        let rng = Mutex::new(SmallRng::seed_from_u64(3));
        for n in 1..=3 {
            let base = Backoff::default().delay(n).as_secs_f64();
            for _ in 0..50 {
                let d = backoff(n, &rng).as_secs_f64();
                assert!(
                    d >= base * (1.0 - JITTER) - 1e-9 && d <= base * (1.0 + JITTER) + 1e-9,
                    "retry {n}: {d} against {base}"
                );
            }
        }
        // Jittered: not every delay is the base.
        let base = Backoff::default().delay(2);
        assert!((0..20).any(|_| backoff(2, &rng) != base));
    }
}
