//! What the saga engine and the two-phase commit coordinator share: claims under an owner
//! with a lease, a number of attempts with a seeded backoff between them, and named
//! definitions.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use palisade_classify::ConfigError;
use palisade_retry::{Backoff, Jitter};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::error::StoreError;
use crate::store::{Claim, Store};

/// The options of [`Sagas`](crate::Sagas) and [`Coordinator`](crate::twopc::Coordinator)
/// builders, with the same defaults.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) owner: String,
    pub(crate) lease: Duration,
    pub(crate) attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) jitter: Jitter,
    pub(crate) seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            owner: "local".into(),
            lease: Duration::from_secs(60),
            attempts: 5,
            backoff: Backoff::exponential(Duration::from_millis(100), 2.0)
                .with_cap(Duration::from_secs(10)),
            jitter: Jitter::Proportional(0.1),
            seed: 0,
        }
    }
}

impl Settings {
    /// Checks every option; `attempts_field` names the attempts option in the error.
    pub(crate) fn validate(&self, attempts_field: &'static str) -> Result<(), ConfigError> {
        if self.owner.is_empty() {
            return Err(ConfigError::new("owner", "must not be empty"));
        }
        if self.lease < Duration::from_secs(1) {
            return Err(ConfigError::new("lease", "must be at least 1 s"));
        }
        if self.attempts == 0 {
            return Err(ConfigError::new(attempts_field, "must be at least 1"));
        }
        self.backoff.validate()?;
        self.jitter.validate()
    }

    /// The end of a claim taken or renewed at `now_ms`.
    pub(crate) fn lease_until(&self, now_ms: u64) -> u64 {
        now_ms.saturating_add(self.lease.as_millis() as u64)
    }

    /// Renews this owner's claim on workflow `id` for a whole lease from now: `false` if
    /// another process holds it now (a claimed workflow waiting its turn in recovery may have
    /// been taken over).
    pub(crate) async fn renew(&self, store: &dyn Store, id: &str) -> Result<bool, StoreError> {
        let until = self.lease_until(crate::engine::now_ms());
        match store.renew(id, &self.owner, until).await {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The jittered delay before retry `retry` (from 1) of item `index` of workflow `id`.
    ///
    /// The rng is seeded from the seed, `salt` (one per kind of workflow), the id, the index
    /// and the retry, so that concurrent workflows do not change each other's delays and a
    /// seed gives the same delays.
    pub(crate) fn delay(&self, salt: u64, id: &str, index: usize, retry: u32) -> Duration {
        let mut h: u64 = self.seed ^ salt;
        for b in id.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        h ^= (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(retry);
        let mut rng = SmallRng::seed_from_u64(h);
        let b = &self.backoff;
        let prev = if retry > 1 {
            b.delay(retry - 1)
        } else {
            Duration::ZERO
        };
        self.jitter.apply(b.delay(retry), b, prev, &mut rng)
    }

    /// Claims the next few workflows of `kind` in `states` for this owner, and returns those
    /// not in `seen` (adding them): recovery loops until this is empty.
    pub(crate) async fn claim_fresh(
        &self,
        store: &dyn Store,
        kind: &str,
        states: &[&str],
        now_ms: u64,
        seen: &mut HashSet<String>,
    ) -> Result<Vec<String>, StoreError> {
        let ids = store
            .claim(Claim::new(
                kind,
                states,
                self.owner.clone(),
                now_ms,
                self.lease_until(now_ms),
                // A few at a time: claimed workflows wait for this process, so a fleet
                // spreads the backlog better, and none waits long enough for its lease to
                // run out.
                4,
            ))
            .await?;
        Ok(ids
            .into_iter()
            .filter(|id| seen.insert(id.clone()))
            .collect())
    }
}

/// The definitions by name; a name registered twice is an error.
pub(crate) fn by_name<D>(
    defs: Vec<D>,
    name: impl Fn(&D) -> &str,
) -> Result<HashMap<String, D>, ConfigError> {
    let mut map = HashMap::new();
    for d in defs {
        let n = name(&d).to_owned();
        if map.contains_key(&n) {
            return Err(ConfigError::new(
                "define",
                format!("definition {n:?} is registered twice"),
            ));
        }
        map.insert(n, d);
    }
    Ok(map)
}
