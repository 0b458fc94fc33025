//! The stacks a scenario's traffic goes through.
//!
//! Every stack gets the same retry settings where it retries (palisade's defaults: up to 3
//! attempts, exponential backoff from 1 s, factor 2, ±10 % jitter; `naive` takes one more
//! attempt, as hand-written loops usually do) and the same per-attempt timeout where it has one.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::classify::BoxError;
use palisade::config::PresetConfig;
use palisade::preset;
use palisade::retry::{Backoff, DEFAULT_MAX_ATTEMPTS, RetryLayer};
use palisade::route::{Route, RouteConfig};
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

/// A stack: one of the built-in four, or palisade's preset built from a configuration file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    /// palisade's preset built from a configuration file ([`StackFile`]), printed under the
    /// file's label. Several can run side by side, and beside [`StackKind::Palisade`].
    File(StackFile),
}

impl StackKind {
    /// Every built-in stack, in the order the table prints them.
    pub const ALL: [StackKind; 4] = [
        StackKind::None,
        StackKind::Naive,
        StackKind::Tower,
        StackKind::Palisade,
    ];

    /// The stack's name on the command line and in the output: a built-in stack's name, or a
    /// file's [label](StackFile::label).
    pub fn name(self) -> &'static str {
        match self {
            StackKind::None => "none",
            StackKind::Naive => "naive",
            StackKind::Tower => "tower",
            StackKind::Palisade => "palisade",
            StackKind::File(file) => file.label(),
        }
    }

    /// The built-in stack named `name`, if there is one (case matters, as on the command line).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether this is a palisade stack, built-in or from a file: the stacks whose goals are
    /// judged ([`goals::judge`](crate::goals::judge)).
    pub fn is_palisade(self) -> bool {
        matches!(self, StackKind::Palisade | StackKind::File(_))
    }
}

impl fmt::Display for StackKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for StackKind {
    /// As its [name](StackKind::name): `"palisade"`, or a file's label.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// The palisade stack a configuration file describes, under a label of its own: what
/// `palisade-sim --stack FILE.toml` runs, so that a stack tuned here ships as the same file.
///
/// A handle, `Copy` like the built-in [`StackKind`]s: [`StackFile::new`] keeps the label and
/// the configuration for the rest of the process (the simulator loads a few files once, at
/// the start). Two handles are equal when they come from the same call to `new`.
///
/// The stack is the preset [`PresetConfig::builder`] gives, its `[route]` settings applied
/// where a scenario has replicas (which stand for its `[[endpoints]]`); a retry seed the file
/// leaves out is each scenario's seed, so runs stay reproducible.
#[derive(Clone, Copy)]
pub struct StackFile(&'static Loaded);

/// What a [`StackFile`] holds.
#[derive(Debug)]
struct Loaded {
    label: String,
    config: PresetConfig,
}

impl StackFile {
    /// A stack built from `config` (a file read with
    /// [`PresetConfig::from_toml_with_env`]), printed as `label`.
    pub fn new(label: impl Into<String>, config: PresetConfig) -> Self {
        StackFile(Box::leak(Box::new(Loaded {
            label: label.into(),
            config,
        })))
    }

    /// The name it is printed under, in the table, the goals and the JSON.
    pub fn label(self) -> &'static str {
        &self.0.label
    }

    /// The configuration it is built from.
    pub fn config(self) -> &'static PresetConfig {
        &self.0.config
    }
}

impl fmt::Debug for StackFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackFile")
            .field("label", &self.0.label)
            .field("config", &self.0.config)
            .finish()
    }
}

impl PartialEq for StackFile {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for StackFile {}

impl std::hash::Hash for StackFile {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::ptr::hash(self.0, state);
    }
}

/// The retry settings every retrying stack shares: palisade's defaults (the attempts and the
/// backoff are read from `palisade::retry`; the jitter is its default `Proportional(0.1)`).
const ATTEMPTS: u32 = DEFAULT_MAX_ATTEMPTS;
const JITTER: f64 = 0.1;

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
            let retry = RetryLayer::builder()
                .name("upstream")
                .seed(p.seed)
                .build()?;
            let preset = preset::recommended("upstream")
                .deadline(p.deadline)
                .attempt_timeout(p.attempt_timeout, Some((2.0, p.deadline)))
                .retry(retry)
                .build()?;
            palisade(preset, None, scenario, replicas)?
        }
        StackKind::File(file) => {
            let mut config = file.config().clone();
            config.retry.seed = config.retry.seed.or(Some(p.seed));
            let preset = config.builder()?.build()?;
            palisade(preset, config.route, scenario, replicas)?
        }
    })
}

/// `preset` over the scenario's replicas: over the only one, or over a router of them (with
/// `route`'s settings, from a stack file, if given).
fn palisade(
    preset: preset::Preset,
    route: Option<RouteConfig>,
    scenario: &Scenario,
    replicas: Vec<Client>,
) -> Result<Client, BoxError> {
    if replicas.len() == 1 {
        let only = replicas.into_iter().next().ok_or("no replica")?;
        return Ok(BoxCloneSyncService::new(preset.layer(only)));
    }
    // Each replica in its scenario's tier, keyed by its position; a stack file's `[route]`
    // settings, if it has them (its endpoints are the scenario's replicas, and the seed is the
    // scenario's).
    let mut builder = replicas
        .into_iter()
        .enumerate()
        .fold(Route::builder([]), |route, (i, replica)| {
            route.tier(scenario.tier(i), [replica])
        });
    if let Some(config) = route {
        builder = builder.config(config);
    }
    let route = builder.seed(scenario.params.seed).build()?;
    Ok(BoxCloneSyncService::new(preset.layer(route)))
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
        assert_eq!(
            StackKind::from_name("classic"),
            None,
            "a file's label is no built-in"
        );
        assert!(StackKind::Palisade.is_palisade());
        assert!(!StackKind::Tower.is_palisade());
    }

    #[test]
    fn a_file_stack_goes_by_its_label_and_is_itself() {
        let config = PresetConfig::from_toml("name = \"llm\"\n").unwrap();
        let a = StackKind::File(StackFile::new("classic", config.clone()));
        let b = StackKind::File(StackFile::new("classic", config.clone()));
        assert_eq!(a.name(), "classic");
        assert_eq!(a.to_string(), "classic");
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"classic\"");
        assert_eq!(
            serde_json::to_string(&StackKind::Palisade).unwrap(),
            "\"palisade\""
        );
        assert!(a.is_palisade());
        assert_eq!(a, a);
        assert_ne!(a, b, "two files, two stacks, whatever their labels");
        let StackKind::File(file) = a else {
            unreachable!()
        };
        assert_eq!(file.config(), &config);
        // Hashed as it compares: by the handle.
        use std::hash::{BuildHasher, RandomState};
        let hasher = RandomState::new();
        assert_eq!(hasher.hash_one(a), hasher.hash_one(a));
        assert_ne!(hasher.hash_one(a), hasher.hash_one(b));
        assert!(format!("{file:?}").starts_with("StackFile { label: \"classic\", config: "));
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
