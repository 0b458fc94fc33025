//! What the saga engine and the two-phase commit coordinator share: claims under an owner
//! with a lease, a number of attempts with a seeded backoff between them, and named
//! definitions.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use palisade_core::ConfigError;
use palisade_retry::{Backoff, Jitter};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::engine::now_ms;
use crate::error::{SagaError, StoreError};
use crate::store::{Claim, Purge, Store};

/// The longest lease (1 day). A lease is how long the work of a process that died waits
/// before another process takes it over; the heartbeat renews it while work runs, so work
/// may take longer. A longer one is refused at build time: besides leaving the work of a
/// dead process stranded for days, an absurd one (`Duration::MAX` from a config file) does
/// not fit the milliseconds the stores keep.
pub(crate) const MAX_LEASE: Duration = Duration::from_secs(24 * 60 * 60);

/// Whether recovery that failed with `error` before driving a workflow may leave it to another
/// process: this one lacks its definition, or has another one than the workflow was started
/// with, or cannot read its journal (an entry of a later version). Another version of the
/// binary may do better. A store failure says nothing about the other processes.
pub(crate) fn another_may_resume(error: &SagaError) -> bool {
    matches!(
        error,
        SagaError::UnknownDefinition(_) | SagaError::Inconsistent { .. }
    )
}

/// A new engine instance token, unique among the engines of this process (a counter) and,
/// short of a collision of process id and start time to the nanosecond, of every other
/// process: `{pid}-{ns since the epoch, hex}-{count}`. Real time, not tokio's (a paused test
/// clock would repeat it across processes).
pub(crate) fn new_instance() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{ns:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whole milliseconds, saturating at `u64::MAX` (where `as u64` would wrap).
pub(crate) use palisade_core::time::millis;

/// The options of [`Sagas`](crate::Sagas) and [`Coordinator`](crate::twopc::Coordinator)
/// builders, with the same defaults.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) owner: String,
    /// This engine's instance token ([`new_instance`]), drawn by the builder's `build`; its
    /// claims record it with the owner name (see [`Store::claim`]).
    pub(crate) instance: String,
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
            instance: String::new(),
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
        // Stored in a text column: PostgreSQL cannot hold a NUL character (refused on every
        // store alike, as ids are).
        if self.owner.contains('\0') {
            return Err(ConfigError::new("owner", "must not hold a NUL character"));
        }
        if self.lease < Duration::from_secs(1) {
            return Err(ConfigError::new("lease", "must be at least 1 s"));
        }
        if self.lease > MAX_LEASE {
            return Err(ConfigError::new("lease", "must be at most 1 day (86400 s)"));
        }
        if self.attempts == 0 {
            return Err(ConfigError::new(attempts_field, "must be at least 1"));
        }
        self.backoff.validate()?;
        self.jitter.validate()
    }

    /// The end of a claim taken or renewed at `now_ms`.
    pub(crate) fn lease_until(&self, now_ms: u64) -> u64 {
        now_ms.saturating_add(millis(self.lease))
    }

    /// Checks every option and draws the instance token: what the builders' `build` does.
    pub(crate) fn built(mut self, attempts_field: &'static str) -> Result<Self, ConfigError> {
        self.validate(attempts_field)?;
        self.instance = new_instance();
        Ok(self)
    }

    /// Renews this engine's claim on workflow `id` for a whole lease from now: `false` if
    /// another process (or engine instance) holds it now (a claimed workflow waiting its turn
    /// in recovery may have been taken over).
    pub(crate) async fn renew(&self, store: &dyn Store, id: &str) -> Result<bool, StoreError> {
        let now = crate::engine::now_ms();
        let until = self.lease_until(now);
        match store
            .renew_instance(id, &self.owner, &self.instance, now, until)
            .await
        {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives back this owner's claim on workflow `id`, which recovery claimed but this process
    /// cannot drive, when `error` says another process may do better ([`another_may_resume`]),
    /// so that a process that can (one running another version of the binary) gets it at
    /// once, and this engine's own recoveries do not take it back for a lease
    /// ([`Store::release`]); after any other error the claim is kept. Call it while `id` is
    /// entered as active.
    ///
    /// Never fails: a store that cannot release ([`StoreError::Unsupported`], a store of
    /// another crate written before `release`) leaves the claim as it was before this method
    /// existed, to run out with its lease; any other failure is logged and does the same.
    pub(crate) async fn give_back(&self, store: &dyn Store, id: &str, error: &SagaError) {
        if !another_may_resume(error) {
            return;
        }
        match store
            .release_instance(id, &self.owner, &self.instance)
            .await
        {
            Ok(()) => tracing::warn!(workflow = id, owner = %self.owner, %error,
                "cannot resume this workflow here; claim given back for another process"),
            Err(StoreError::Unsupported(_)) => tracing::debug!(workflow = id,
                owner = %self.owner, %error,
                "cannot resume this workflow here; the store cannot give claims back"),
            Err(e) => tracing::warn!(workflow = id, owner = %self.owner, %error,
                release_error = %e, "cannot resume this workflow here, nor give its claim back"),
        }
    }

    /// Deletes the workflows of `kind` in (final) `states` that nobody holds and whose latest
    /// entry is older than `older_than`, with their journals, a batch at a time; returns how
    /// many went.
    pub(crate) async fn purge_finished(
        store: &dyn Store,
        kind: &str,
        states: &[&str],
        older_than: Duration,
    ) -> Result<u64, SagaError> {
        /// Workflows per store transaction.
        const BATCH: usize = 500;
        let before = now_ms().saturating_sub(millis(older_than));
        let mut total = 0u64;
        loop {
            let n = store.purge(Purge::new(kind, states, before, BATCH)).await?;
            total = total.saturating_add(n);
            if n < BATCH as u64 {
                return Ok(total);
            }
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

    /// The loop of both recoveries: claims the workflows of `kind` in `states` that this
    /// owner may take, a few at a time, and hands each one to `each` (once), until none is left
    /// to claim. One that `each` cannot drive it gives back ([`Settings::give_back`]); the
    /// store then keeps it from this engine instance's claims for a lease, so the loop does not take it
    /// again (and were the lease to run out during a long pass, `seen` still keeps it from
    /// `each`, and the next pass gives it back again). Returns what `each` gave back (`None`s left out) and the workflows it failed
    /// on, with their errors; a failed claim ends the loop with that error.
    pub(crate) async fn recover_each<T, F, Fut>(
        &self,
        store: &dyn Store,
        kind: &str,
        states: &[&str],
        mut each: F,
    ) -> Result<Recovered<T>, SagaError>
    where
        F: FnMut(String) -> Fut,
        Fut: Future<Output = Result<Option<T>, SagaError>>,
    {
        let mut out = Recovered {
            done: Vec::new(),
            failed: Vec::new(),
        };
        let mut seen = HashSet::new();
        loop {
            let now = now_ms();
            let claim = Claim::new(
                kind,
                states,
                self.owner.clone(),
                now,
                self.lease_until(now),
                // A few at a time: claimed workflows wait for this process, so a fleet spreads
                // the backlog better. One whose lease runs out while it waits may be taken
                // over by another process; `each` finds that out when it renews the claim.
                // Plus those handed to `each` already: this owner claims its own again (those
                // `each` could not finish, those running in another task), oldest first, and
                // without room for them the claim would never reach the ones behind.
                seen.len().saturating_add(4),
            )
            .with_instance(self.instance.clone());
            let fresh: Vec<String> = store
                .claim(claim)
                .await?
                .into_iter()
                .filter(|id| seen.insert(id.clone()))
                .collect();
            if fresh.is_empty() {
                return Ok(out);
            }
            for id in fresh {
                match each(id.clone()).await {
                    Ok(Some(t)) => out.done.push(t),
                    Ok(None) => {}
                    Err(e) => out.failed.push((id, e)),
                }
            }
        }
    }
}

/// What [`Settings::recover_each`] did.
pub(crate) struct Recovered<T> {
    /// What each workflow's recovery returned.
    pub(crate) done: Vec<T>,
    /// The workflows whose recovery failed, and why.
    pub(crate) failed: Vec<(String, SagaError)>,
}

/// The setters [`SagasBuilder`](crate::SagasBuilder) and
/// [`CoordinatorBuilder`](crate::twopc::CoordinatorBuilder) share, over their `defs` and
/// `settings` fields: `define`, `owner`, `lease`, the attempts and backoff setters (named and
/// documented by the caller), and `seed`. `$what` names the workflows ("sagas"), `$work`
/// what runs while the heartbeat renews the claim.
macro_rules! workflow_setters {
    (
        definition: $def:ty,
        what: $what:literal,
        work: $work:literal,
        $(#[$attempts_doc:meta])* attempts: $attempts:ident,
        $(#[$backoff_doc:meta])* backoff: $backoff:ident $(,)?
    ) => {
        /// Registers a definition (its name must be unique).
        pub fn define(mut self, definition: $def) -> Self {
            self.defs.push(definition);
            self
        }

        #[doc = concat!(
            "The name this process claims ", $what, " under (default `\"local\"`; not empty, ",
            "without a NUL character, which PostgreSQL cannot store: `build` refuses it). ",
            "Each engine also draws a token of its own when it is built (its *instance*), and ",
            "its claims record both: another engine under the same name (two engines of one ",
            "process, two replicas left at the default name, this process restarted) takes ",
            "its unfinished work only once its heartbeat has visibly stopped, its claim last ",
            "renewed more than seven twelfths of the lease ago (35 s of the default 60 s), ",
            "never while it runs; an engine under another name waits for the whole lease. ",
            "So a restarted process should keep its name, to resume its work soon after it ",
            "starts; processes sharing a store may share a name, though one each says in the ",
            "store whose work is whose."
        )]
        pub fn owner(mut self, owner: impl Into<String>) -> Self {
            self.settings.owner = owner.into();
            self
        }

        #[doc = concat!(
            "How long a claim lasts without being renewed (default 60 s, at least 1 s, at ",
            "most 1 day: [`build`](Self::build) refuses others with a `ConfigError` naming ",
            "`lease`). ",
            "Journal entries renew it, and so does a heartbeat every third of it while ", $work,
            ", so that work may take longer than this. It is how long one of the ", $what,
            " of a process that died waits before another process may take it over. ",
            "Expiry (and a stopped heartbeat) is judged by the wall clock of the process that ",
            "claims: the processes sharing a store need clocks kept in step (NTP), to well ",
            "within a twelfth of the lease for engines under one owner name and half of it ",
            "otherwise, since one whose clock runs ahead by more than about a quarter of it ",
            "(under the same name) or two thirds of it (under another) may take over a live ",
            "claim. The journal still refuses the displaced process's entries (each append ",
            "checks the owner and the instance), but the step it was running may then run ",
            "twice, so give steps with effects an idempotency key. ",
            "A process that cannot renew (its store unreachable) stops trusting its claim ",
            "half a lease after it last secured it, by its own clock: it drops the work in ",
            "flight and reports the claim lost, before another process, or another engine ",
            "under its name, may take it over."
        )]
        pub fn lease(mut self, lease: Duration) -> Self {
            self.settings.lease = lease;
            self
        }

        $(#[$attempts_doc])*
        pub fn $attempts(mut self, attempts: u32) -> Self {
            self.settings.attempts = attempts;
            self
        }

        $(#[$backoff_doc])*
        pub fn $backoff(mut self, backoff: Backoff, jitter: Jitter) -> Self {
            self.settings.backoff = backoff;
            self.settings.jitter = jitter;
            self
        }

        #[doc = concat!(
            "The seed of the jitter's rng (default 0): the delays of one of the ", $what,
            " depend only on the seed, its id, the step or participant, and the attempt."
        )]
        pub fn seed(mut self, seed: u64) -> Self {
            self.settings.seed = seed;
            self
        }
    };
}
pub(crate) use workflow_setters;

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Recovery gives a workflow back only for what another version of the binary may do
    /// better: a missing or changed definition, a journal it cannot read. A store failure, a
    /// journal that is not there, says nothing about the other processes: the claim is kept.
    #[test]
    fn only_a_definition_or_journal_this_process_cannot_use_is_left_to_another() {
        assert!(another_may_resume(&SagaError::UnknownDefinition(
            "trip".into()
        )));
        assert!(another_may_resume(&SagaError::Inconsistent {
            saga: "s".into(),
            reason: "changed steps".into(),
        }));
        for kept in [
            SagaError::Store(StoreError::Backend("connection reset".into())),
            SagaError::Store(StoreError::Corrupt("bad json".into())),
            SagaError::Store(StoreError::Closed),
            SagaError::NotFound("s".into()),
        ] {
            assert!(!another_may_resume(&kept), "{kept:?}");
        }
    }

    #[test]
    fn millis_saturate() {
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::from_millis(u64::MAX)), u64::MAX);
        assert_eq!(millis(Duration::MAX), u64::MAX);
        // Where `as u64` would keep only the low 64 bits of the milliseconds.
        let huge = Duration::from_secs(u64::MAX / 3);
        assert_eq!(millis(huge), u64::MAX);
        let s = Settings {
            lease: Duration::MAX,
            ..Settings::default()
        };
        assert_eq!(s.lease_until(5), u64::MAX);
        let s = Settings {
            lease: huge,
            ..Settings::default()
        };
        assert_eq!(s.lease_until(5), u64::MAX);
    }

    #[test]
    fn every_option_is_checked_at_its_bounds() {
        let field = |s: &Settings| s.validate("attempts").unwrap_err().field().to_owned();
        let mut s = Settings::default();
        assert!(s.validate("attempts").is_ok());
        s.lease = Duration::from_secs(1);
        assert!(s.validate("attempts").is_ok(), "1 s is the shortest lease");
        s.lease = Duration::from_millis(999);
        assert_eq!(field(&s), "lease");
        s.lease = MAX_LEASE;
        assert!(s.validate("attempts").is_ok(), "1 day is the longest lease");
        for absurd in [MAX_LEASE + Duration::from_millis(1), Duration::MAX] {
            s.lease = absurd;
            let err = s.validate("attempts").unwrap_err();
            assert_eq!(
                (err.field(), err.rule()),
                ("lease", "must be at most 1 day (86400 s)")
            );
        }
        s.lease = Duration::from_secs(1);
        s.attempts = 0;
        assert_eq!(field(&s), "attempts");
        s.attempts = 1;
        s.owner = String::new();
        assert_eq!(field(&s), "owner");
    }

    /// Each seed gives its own delays, and each kind of workflow (its salt) its own, for the
    /// same workflow id, item and retry.
    #[test]
    fn delays_differ_by_seed_and_by_kind() {
        let delays = |seed: u64, salt: u64| {
            let s = Settings {
                seed,
                ..Settings::default()
            };
            (1..=5)
                .map(|n| s.delay(salt, "x", 2, n))
                .collect::<Vec<_>>()
        };
        let (saga, twopc) = (0xcbf2_9ce4_8422_2325, 0x2FC0_2FC0_2FC0_2FC0);
        for salt in [saga, twopc] {
            let by_seed: Vec<_> = (0..4).map(|seed| delays(seed, salt)).collect();
            for (i, a) in by_seed.iter().enumerate() {
                for b in &by_seed[i + 1..] {
                    assert_ne!(a, b, "salt {salt:#x}");
                }
            }
        }
        for seed in 0..4 {
            assert_ne!(delays(seed, saga), delays(seed, twopc), "seed {seed}");
            assert_eq!(delays(seed, saga), delays(seed, saga));
        }
    }

    /// Items of one workflow draw their own delays: at one retry, eight items get eight.
    #[test]
    fn each_item_draws_its_own_delay() {
        let s = Settings::default();
        for retry in 1..=3 {
            let mut seen: Vec<Duration> = (0..8).map(|i| s.delay(7, "x", i, retry)).collect();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), 8, "retry {retry}: {seen:?}");
        }
    }

    /// Decorrelated jitter draws each delay between the initial delay and three times the
    /// previous retry's delay (the initial one before the first retry).
    #[test]
    fn decorrelated_jitter_reaches_three_times_the_previous_delay() {
        let s = Settings {
            jitter: Jitter::Decorrelated,
            ..Settings::default()
        };
        let ms = Duration::from_millis;
        for (retry, hi) in [(1, ms(300)), (3, ms(600))] {
            let drawn: Vec<Duration> = (0..200)
                .map(|i| s.delay(7, &format!("w{i}"), 0, retry))
                .collect();
            assert!(
                drawn.iter().all(|d| (ms(100)..=hi).contains(d)),
                "retry {retry}"
            );
            let top = drawn.iter().max().unwrap();
            assert!(
                *top > hi.mul_f64(0.9),
                "retry {retry}: the band's top is reached: {top:?}"
            );
        }
    }
}
